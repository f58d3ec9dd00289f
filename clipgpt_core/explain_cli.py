"""`clipgpt explain`: which text explains a function of images, from a shell.

    clipgpt explain --csv scores.csv                      # two columns: image path, score
    clipgpt explain --positives cats/ --negatives dogs/   # a folder against a folder (scores 1 / 0)
    clipgpt explain --csv scores.csv --method dissect --top 5 --out explanations.json
    clipgpt explain --csv scores.csv --embeddings embeddings/   # `clip-retrieval inference` output: no image is read

Prints the ranked explanations (text, held-out Spearman rho, R^2, log p under the prior); --out also
writes them as JSON. The same work as the app's Explain tab (clipgpt_core.explainers).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .errors import ClipGPTError


def main(argv=None):
    from .explainers import DEFAULT_PRIOR_WEIGHT, METHODS, explain
    from .targets import scores_from_csv, scores_from_folders, scores_with_embeddings
    p = argparse.ArgumentParser(prog="clipgpt explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="a CSV of image paths and scores (relative paths: from the CSV's folder)")
    src.add_argument("--positives", help="a folder of images scored 1 (with --negatives)")
    p.add_argument("--negatives", help="a folder of images scored 0")
    p.add_argument("--embeddings", help="with --csv: the embeddings folder (img_emb/ + metadata/) that `clip-retrieval "
                                        "inference` or `clipgpt index` wrote for those images, made with this "
                                        "bundle's CLIP; the images themselves are then not read")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="default: partial for a ShapesWorld bundle, search for any other (explainers.default_method)")
    p.add_argument("--budget", type=int, default=None, help="search rounds or optimisation steps (default per method)")
    p.add_argument("--prior-weight", type=float, default=DEFAULT_PRIOR_WEIGHT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=10, help="how many explanations to keep")
    p.add_argument("--bundle", default=None, help="built-in name, bundle directory, or open_clip:ARCH/TAG")
    p.add_argument("--out", help="also write the explanations to this JSON file")
    args = p.parse_args(argv)
    if args.positives and not args.negatives:
        p.error("--positives needs --negatives")
    if args.embeddings and not args.csv:
        p.error("--embeddings goes with --csv (the CSV's paths name the embeddings' rows)")
    from .bundle import load_bundle
    try:
        if args.embeddings:
            paths, images, scores = scores_with_embeddings(args.csv, args.embeddings)
        else:
            paths, scores = scores_from_csv(args.csv) if args.csv else scores_from_folders(args.positives, args.negatives)
            images = paths
        ranked = explain(load_bundle(args.bundle), images, scores, method=args.method, budget=args.budget,
                         prior_weight=args.prior_weight, seed=args.seed, keep=args.top)
    except (ClipGPTError, ValueError) as e:      # explain() still raises ValueError for bad settings
        p.exit(2, f"clipgpt explain: {e}\n")
    print(f"{'rho':>6} {'R2':>6} {'log p':>7}  text   ({len(paths)} images, {ranked[0].method if ranked else args.method})")
    for e in ranked:
        print(f"{e.spearman:6.3f} {e.r2:6.3f} {e.log_prior:7.2f}  {e.text}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump([asdict(e) for e in ranked], f, indent=2, default=str)
