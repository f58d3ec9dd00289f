"""`clipgpt explain`: which text explains a function of images, from a shell.

    clipgpt explain --csv scores.csv                      # two columns: image path, score
    clipgpt explain --positives cats/ --negatives dogs/   # a folder against a folder (scores 1 / 0)
    clipgpt explain --csv scores.csv --method dissect --top 5 --out explanations.json
    clipgpt explain --csv scores.csv --embeddings embeddings/   # `clip-retrieval inference` output: no image is read
    clipgpt explain --model net.pt2 --layer layer4 --units 0,5 --images photos/ --out units.csv   # a model's units
    clipgpt explain --model-class mypkg.nets:Net --state-dict net.safetensors --layer fc --images photos/

Prints the ranked explanations (text, held-out Spearman rho, R^2, log p under the prior); --out also
writes them as JSON. With a model (a torch.export .pt2, a TorchScript file, or a class and its safetensors
state dict), every unit asked for is explained at once, read through a forward hook on --layer; --out then
writes the table (.csv or .json). The same work as the app's Explain tab (clipgpt_core.explainers).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..errors import ClipGPTError


def main(argv=None):
    from ..explainers import DEFAULT_PRIOR_WEIGHT, METHODS, explain
    from ..explainers.scores import scores_from_csv, scores_from_folders, scores_with_embeddings
    p = argparse.ArgumentParser(prog="clipgpt explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="a CSV of image paths and scores (relative paths: from the CSV's folder)")
    src.add_argument("--positives", help="a folder of images scored 1 (with --negatives)")
    src.add_argument("--model", help="a vision model whose units to explain: torch.export .pt2 or TorchScript")
    src.add_argument("--model-class", help="module:Class of a vision model (with --state-dict)")
    p.add_argument("--state-dict", help="with --model-class: its weights, a safetensors file")
    p.add_argument("--layer", default="", help="with a model: the layer (a name in model.named_modules(); "
                                                "default: the model's output)")
    p.add_argument("--units", default="", help="with a model: unit indices, e.g. 0,5,7 (default: all of the layer)")
    p.add_argument("--pool", choices=["mean", "max"], default="mean",
                   help="with a model: how a conv channel is pooled over space")
    p.add_argument("--images", help="with a model: the folder of images to read its units on")
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
    from ..bundle import load_bundle
    if args.model or args.model_class:
        return explain_model_units(p, args, load_bundle)
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


def explain_model_units(p: argparse.ArgumentParser, args, load_bundle) -> None:
    """--model / --model-class: every unit asked for, one row each, printed and (--out) written."""
    from ..explainers.scores import images_in
    from ..explainers.units import explain_units, load_vision_model
    if not args.images:
        p.error("a model's units are read on --images DIR")
    try:
        units = [int(u) for u in args.units.split(",") if u.strip()] or None
    except ValueError:
        p.error(f"--units takes indices such as 0,5,7, not {args.units!r}")
    try:
        model = load_vision_model(args.model, args.model_class, args.state_dict)
        table = explain_units(load_bundle(args.bundle), model, args.layer, images_in(args.images, "Images"),
                              units=units, pool=args.pool, seed=args.seed)
    except ClipGPTError as e:
        p.exit(2, f"clipgpt explain: {e}\n")
    print(table.to_dataframe().to_string(index=False))
    if args.out:
        out = table.to_json(args.out) if args.out.endswith(".json") else table.to_csv(args.out)
        print(f"wrote {out}")
