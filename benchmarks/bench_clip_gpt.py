"""Benchmark CLIP-GPT (seed 002's one model) on every task beside its baselines, in one run.

    python -m benchmarks.bench_clip_gpt [--n 200] [--clip-gpt DIR] [--out benchmarks/results/clip_gpt.json]

Every image is drawn by the independent renderer (benchmarks/alt_render.py) from evaluation seeds training
never uses; judges are structural (the world's parser and scene truth), no model.
- captions: write([image]) vs a separate captioner (--captioner: the v2 bundle's): two-object scenes named with exactly their colour-shape
  pairs (seen pairs; one held-out pair and a seen one; both held out), and 1-4 object scenes: true, the background
  stated right, every object's size stated and bound to it, and all of it (whole).
- caption -> vector: R@1 of the captioned scene among every scene of the set (5 n scenes; captions stating colour,
  size, position and background) for embed([caption]), the MLP caption->CLIP prior, CLIP's own text vector.
- edits: R@1 of the edited scene for embed([image, edit]) against a gallery of the source, the same change made
  to another object (or the object added in another cell, another background) and 20 unrelated scenes; beside
  phrase arithmetic z + T(new) - T(old) with the edit's own phrases, whole-caption arithmetic
  z + T(caption after) - T(caption before), and the image alone. Edits in every accepted wording.
- differences: write([a, b, "what changed?"]) parsed and judged by what it does (world/edits.py).
- prior: sampling validity and tokens/s with the KV cache, CLIP-GPT beside the bundle's prior.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_captions import exact_pairs
from benchmarks import write_report
from benchmarks.bench_clip import EVAL_SEED, draw
from clipgpt_core import world
from clipgpt_core.bundle import load_bundle
from clipgpt_core.models.clip_gpt import ClipGPT
from clipgpt_core.world import edits as E
from clipgpt_core.world.captions import parse_caption
from clipgpt_core.world.corpus import mixed_scene

EVERYTHING = frozenset({"colour", "size", "position", "background"})


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def whole(d, scene) -> dict:
    """How whole and right a caption is: true of the scene; the background stated right; every object's size stated
    and bound to it (each phrase's shape, colour and size match its own object); all of these together."""
    from dataclasses import replace
    if d is None:
        return {"true": False, "background": False, "sizes": False, "whole": False}
    true = world.is_true(d, scene)
    background = d.background == scene.background
    sized = all(p.size for p in d.phrases)
    bare = replace(d, phrases=tuple(replace(p, position=None) for p in d.phrases), relation=None, background=None)
    sizes = sized and world.is_true(bare, scene)
    return {"true": true, "background": background, "sizes": sizes,
            "whole": true and background and sizes and all(p.colour for p in d.phrases)}


def bench_captions(bundle, gpt: ClipGPT, n: int, seed: int, captioner) -> dict:
    out = {}
    held = lambda s: sum((o.colour, o.shape) in world.HELDOUT_PAIRS for o in s.objects)    # noqa: E731
    # seen pairs only; one held-out pair beside a seen one; both held out
    for name, split, wanted in (("two_objects_seen", "train", 0), ("two_objects_one_heldout", "any", 1),
                                ("two_objects_heldout", "heldout", 2)):
        rng = random.Random(seed + len(out))
        scenes, images = [], []
        while len(scenes) < n:
            s = world.sample_scene(rng, n_objects=2, split=split)
            if s.objects[0].colour != s.objects[1].colour and s.objects[0].shape != s.objects[1].shape and \
                    held(s) == wanted:
                scenes.append(s)
                images.append(draw(s, rng, "alt"))
        out[name] = {}
        for method, caps in (("clip_gpt", [gpt.write([im]) for im in images]),
                             *((("captioner", captioner.caption(images)),) if captioner else ())):
            out[name][method] = float(np.mean([exact_pairs(parse_caption(c), s) for c, s in zip(caps, scenes)]))
    rng = random.Random(seed + 7)
    scenes = [mixed_scene(rng, (0.3, 0.35, 0.2, 0.15)) for _ in range(n)]
    images = [draw(s, rng, "alt") for s in scenes]
    out["whole_scene"] = {}
    for method, caps in (("clip_gpt", [gpt.write([im]) for im in images]),
                         *((("captioner", captioner.caption(images)),) if captioner else ())):
        judged = [whole(parse_caption(c), s) for c, s in zip(caps, scenes)]
        out["whole_scene"][method] = {k: float(np.mean([j[k] for j in judged])) for k in judged[0]}
        out["whole_scene"][method]["whole_by_objects"] = {
            n: float(np.mean([j["whole"] for j, s in zip(judged, scenes) if len(s.objects) == n])) for n in (1, 2, 3, 4)}
        out["whole_scene"][method]["examples"] = caps[:4]
    return out


def bench_text_vectors(bundle, gpt: ClipGPT, n: int, seed: int, split: str = "train") -> dict:
    """R@1 of each scene's whole caption among all n scenes (every scene is a query and in the gallery); split
    "heldout": every object a held-out colour-shape pair. Beside it, how often the caption is true of the nearest
    image's scene: a whole caption can be true of two scenes of the gallery (one object, the same cell), and then R@1
    counts a coin toss against every method alike."""
    rng = random.Random(seed)
    scenes = [mixed_scene(rng, (0.3, 0.35, 0.2, 0.15), split) for _ in range(n)]
    images = [draw(s, rng, "alt") for s in scenes]
    descs, texts = [], []
    for s in scenes:
        descs.append(world.describe(s, rng, EVERYTHING))
        texts.append(world.caption_text(descs[-1], rng))
    gallery = bundle.clip.encode_images(images)
    queries = {"clip_gpt": gpt.embed_batch([[t] for t in texts]), "clip_text": bundle.clip.encode_texts(texts)}
    if bundle.embedding_prior is not None:
        queries["embedding_prior"] = bundle.embedding_prior.predict(texts)
    def spread(x):        # mean cosine between different vectors: higher = nearer one mean vector
        c = x @ x.T
        return float((c.sum() - np.trace(c)) / (len(x) * (len(x) - 1)))
    nearest = {k: np.argmax(q @ gallery.T, 1) for k, q in queries.items()}
    return {"gallery": n, **{k: float(np.mean(j == np.arange(n))) for k, j in nearest.items()},
            "caption_true_of_nearest": {k: float(np.mean([world.is_true(d, scenes[i]) for d, i in zip(descs, j)]))
                                        for k, j in nearest.items()},
            "captions_true_of_another_scene": float(np.mean([any(world.is_true(d, o) for o in scenes if o is not s)
                                                             for d, s in zip(descs, scenes)])),
            "cosine_to_own_image": {k: float((q * gallery).sum(1).mean()) for k, q in queries.items()},
            "mean_pairwise_cosine": {"images": spread(gallery)} | {k: spread(q) for k, q in queries.items()}}


def edit_phrases(edit: E.Edit, scene) -> tuple[str, str]:
    """(new, old): the edit's own phrases, for arithmetic."""
    t = " ".join(edit.target) if edit.target else ""
    if edit.kind == "recolour":
        return f"{world.article(edit.colour)} {edit.colour} {edit.target[1]}", f"{world.article(t)} {t}"
    if edit.kind == "replace":
        return f"{world.article(edit.colour)} {edit.colour} {edit.shape}", f"{world.article(t)} {t}"
    if edit.kind == "remove":
        return "", f"{world.article(t)} {t}"
    if edit.kind == "add":
        return f"{world.article(edit.size)} {edit.size} {edit.colour} {edit.shape} in the {edit.position}", ""
    return f"on a {edit.background} background", f"on a {scene.background} background"


def bench_edits(bundle, gpt: ClipGPT, n: int, seed: int, unrelated: int = 20) -> dict:
    clip = bundle.clip
    rng = random.Random(seed)
    pool = [draw(mixed_scene(rng, (0.3, 0.4, 0.3, 0.0)), rng, "alt") for _ in range(unrelated)]
    pool_vecs = clip.encode_images(pool)
    out = {}
    for kind in E.KINDS:
        rows = []
        while len(rows) < n:
            scene = mixed_scene(rng, (0.0, 0.6, 0.4, 0.0) if kind == "remove" else (0.3, 0.4, 0.3, 0.0))
            made = E.random_edit(scene, rng, kind=kind)
            if made is None:
                continue
            edit, after = made
            miss = E.near_miss(scene, edit, rng)
            rows.append((scene, edit, after, miss, E.edit_text(edit, rng)))
        src = clip.encode_images([draw(r[0], rng, "alt") for r in rows])
        tgt = clip.encode_images([draw(r[2], rng, "alt") for r in rows])
        miss = [clip.encode_images([draw(r[3], rng, "alt")])[0] if r[3] is not None else None for r in rows]
        caps = [[world.caption_text(world.describe(s, random.Random(i), EVERYTHING)) for s in (r[0], r[2])]
                for i, r in enumerate(rows)]
        T = lambda texts: clip.encode_texts(texts)    # noqa: E731
        new, old = zip(*[edit_phrases(r[1], r[0]) for r in rows])
        t_new = np.stack([T([t])[0] if t else np.zeros(clip.dim, np.float32) for t in new])
        t_old = np.stack([T([t])[0] if t else np.zeros(clip.dim, np.float32) for t in old])
        queries = {
            "clip_gpt": gpt.embed_batch([[im, text] for im, text in zip(src, [r[4] for r in rows])]),
            "phrase_arithmetic": unit(src + t_new - t_old),
            "caption_arithmetic": unit(src + T([c[1] for c in caps]) - T([c[0] for c in caps])),
            "image_alone": src,
        }
        out[kind] = {"n": n, "with_near_miss": int(sum(m is not None for m in miss))}
        for method, q in queries.items():
            hits = []
            for i in range(n):
                gallery = [tgt[i], src[i]] + ([miss[i]] if miss[i] is not None else []) + list(pool_vecs)
                hits.append(int(np.argmax(np.stack(gallery) @ q[i])) == 0)
            out[kind][method] = float(np.mean(hits))
    out["all"] = {m: float(np.mean([out[k][m] for k in E.KINDS])) for m in
                  ("clip_gpt", "phrase_arithmetic", "caption_arithmetic", "image_alone")}
    return out


def bench_differences(gpt: ClipGPT, n: int, seed: int) -> dict:
    """write([a, b, "what changed?"]) as shipped (the beams and their one-word changes checked by doing them) and
    the likeliest beam alone (rerank=False), judged by what the written edit does."""
    rng = random.Random(seed)
    right: dict[str, dict[str, list]] = {m: {k: [] for k in E.KINDS} for m in ("checked", "likeliest_beam")}
    examples = []
    for i in range(n):
        kind = E.KINDS[i % len(E.KINDS)]
        while True:
            scene = mixed_scene(rng, (0.0, 0.6, 0.4, 0.0) if kind == "remove" else (0.3, 0.4, 0.3, 0.0))
            made = E.random_edit(scene, rng, kind=kind)
            if made is not None:
                break
        edit, after = made
        parts = [draw(scene, rng, "alt"), draw(after, rng, "alt"), E.DIFF_QUESTION]
        for method, rerank in (("checked", True), ("likeliest_beam", False)):
            text = gpt.write(parts, rerank=rerank)
            said = E.parse_edit(text)
            right[method][kind].append(said is not None and (said == edit or E.same_content(E.apply_edit(scene, said),
                                                                                             after)))
            if method == "checked" and len(examples) < 6:
                examples.append([text, E.edit_text(edit)])
    out = {m: {"exact": float(np.mean([x for v in r.values() for x in v])),
               **{k: float(np.mean(v)) for k, v in r.items()}} for m, r in right.items()}
    return out | {"examples": examples}


def bench_prior(bundle, gpt: ClipGPT, n: int = 1000) -> dict:
    out = {}
    for name, sample in (("clip_gpt", gpt.sample), ("prior", bundle.prior.sample)):
        texts = sample(n, temperature=1.0, seed=EVAL_SEED)
        sample(64, temperature=1.0, seed=1)                         # warm-up
        t = time.perf_counter()
        timed = sample(256, temperature=1.0, seed=2)
        seconds = time.perf_counter() - t
        tokens = sum(len(bundle.prior.encode(x)) + 1 for x in timed)
        out[name] = {"validity": float(np.mean([parse_caption(x) is not None for x in texts])),
                     "tokens_per_s": tokens / seconds, "examples": texts[:4]}
    out["speed_ratio"] = out["clip_gpt"]["tokens_per_s"] / out["prior"]["tokens_per_s"]
    return out


def separate_captioner(bundle, directory: str):
    """The baseline captioner (ClipCap's mapper + fine-tuned prior blocks), loaded from its folder."""
    from clipgpt_core.models.captioner import Captioner
    from clipgpt_core.world.captions import WORD_GROUPS
    if not Path(directory, "mapper_config.json").is_file():
        raise SystemExit(f"no captioner at {directory}: pass --captioner DIR (see --help)")
    return Captioner.load(bundle.clip, bundle.prior, directory, edit_groups=WORD_GROUPS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="shapes")
    p.add_argument("--clip-gpt", default=None, help="a CLIP-GPT folder (default: the bundle's)")
    p.add_argument("--captioner", default="runs/captioner_v2",
                   help="the separate captioner compared in `captions` (the built-in bundle's until CLIP-GPT became its "
                        "captioner: git archive 3b22937 assets/shapes/captioner | tar -x -C /tmp, then that folder; "
                        "'none': leave it out, e.g. for a bundle with another CLIP, which that captioner cannot read)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", default="captions,text_to_vector,text_to_vector_heldout,edits,differences,prior",
                   help="which tasks to run (comma-separated)")
    p.add_argument("--compare", default="",
                   help="other CLIP-GPT folders (comma-separated, e.g. the head ablation's runs) whose vectors are "
                        "measured beside the bundle's in the same run (caption -> vector, edits)")
    p.add_argument("--out", default="benchmarks/results/clip_gpt.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    bundle = load_bundle(args.bundle)
    gpt = ClipGPT.load(args.clip_gpt, bundle.clip, bundle.prior) if args.clip_gpt else bundle.clip_gpt
    seed = EVAL_SEED + 900
    report = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]) if __spec__ else "bench_clip_gpt",
              "n": args.n, "renderer": "independent (benchmarks/alt_render.py)"}
    baseline = lambda: None if args.captioner == "none" else separate_captioner(bundle, args.captioner)  # noqa: E731
    tasks = {"captions": lambda: bench_captions(bundle, gpt, args.n, seed, baseline()),
             "text_to_vector": lambda: bench_text_vectors(bundle, gpt, 5 * args.n, seed + 10),
             "text_to_vector_heldout": lambda: bench_text_vectors(bundle, gpt, 5 * args.n, seed + 11, "heldout"),
             "edits": lambda: bench_edits(bundle, gpt, args.n // 2, seed + 20),
             "differences": lambda: bench_differences(gpt, args.n, seed + 30),
             "prior": lambda: bench_prior(bundle, gpt)}
    for name in args.tasks.split(","):
        if name not in tasks:
            p.error(f"unknown task {name!r}; tasks: {', '.join(tasks)}")
        report[name] = tasks[name]()
        print(name, json.dumps(report[name])[:400], flush=True)
    for folder in filter(None, args.compare.split(",")):
        other = ClipGPT.load(folder, bundle.clip, bundle.prior)
        report.setdefault("compare", {})[folder] = {
            "train_config": json.loads((Path(folder) / "train_config.json").read_text()),
            "text_to_vector": bench_text_vectors(bundle, other, 5 * args.n, seed + 10),
            "edits": bench_edits(bundle, other, args.n // 2, seed + 20)}
        print(folder, json.dumps(report["compare"][folder]["edits"]["all"]), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
