"""Binding in a CLIP's vectors (seed 003: "a CLIP image vector can't bind"): colours and sizes, text side and image side.

    python -m benchmarks.bench_binding [--clips assets/shapes/clip,runs/clip_unsized,runs/clip_nohn,runs/clip_sizes] [--n 300]

For each CLIP, on two-object scenes (two colours, two shapes, one large and one small object; seen pairs) drawn by
the independent renderer (benchmarks/alt_render.py), and for two swaps — colours (the objects trade colours) and
sizes (they trade sizes):
  * text: cosine between a caption naming both objects' colour, size and shape and the same caption swapped
    (1.0: the text vector does not tell them apart);
  * image: with a second drawing of the same scene (objects elsewhere) and a drawing of the swapped scene, the share
    where the same scene is nearer (0.5: chance; the vector does not hold the binding);
  * zero-shot: the share of images whose caption scores above its swapped twin.
And on 300 scenes of three or four objects (crowded): how often the whole caption (every object's size, colour and
shape, the background) scores above each of its binding swaps -- two objects trading colours, shapes or sizes, one
object made a copy of another -- and above all of them at once: what CLIP-GPT's captions need (its sizes bar).
Compare: the shipped CLIP (`python -m clipgpt_train.clip`: hard negatives swap colours, shapes and sizes, and
size-colour-shape presence), runs/clip_unsized (`--no-size-conjunctions --size-swap-share 0`: the recipe before
2026-12-07, whose hard negatives never swap sizes), runs/clip_nohn (that, with `--no-edited-partners --text-negatives 0
--binding-weight 0 --group-share 0`: no hard negatives) and runs/clip_sizes (that, with `--size-swap-share 0.3`: size
swaps among the hard negatives, no conjunctions).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from benchmarks import alt_render, write_report
from clipgpt_core import world
from clipgpt_core.models.clip import load_clip

EVAL_SEED = 1_000_000_007


def scene_pairs(n: int, seed: int):
    """n (scene, the scene redrawn elsewhere, its colour swap, its size swap), and their captions."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        bg = rng.choice(list(world.BACKGROUNDS))
        (c1, s1), (c2, s2) = (world.sample_object_kind(rng, bg, "train") for _ in range(2))
        if c1 == c2 or s1 == s2 or not (world.split_allows(c2, s1, "train") and world.split_allows(c1, s2, "train")):
            continue
        sizes = ["large", "small"] if rng.random() < 0.5 else ["small", "large"]
        draw = lambda kinds, sz: world.sample_scene(rng, kinds=kinds, sizes=sz, background=bg)   # noqa: E731
        scene = draw([(c1, s1), (c2, s2)], sizes)
        out.append({"scene": scene, "again": draw([(c1, s1), (c2, s2)], sizes),
                    "colour": draw([(c2, s1), (c1, s2)], sizes), "size": draw([(c1, s1), (c2, s2)], sizes[::-1])})
    return out, rng


def listing(objects, background: str | None = None) -> world.Description:
    """Every object with colour, size and shape stated, in the order given [and the background]."""
    return world.Description(tuple(world.Phrase(o.shape, o.colour, o.size) for o in objects), background=background)


def caption(scene) -> str:
    """Both objects with colour, size and shape stated, in scene order (the world's canonical wording)."""
    return world.caption_text(listing(scene.objects))


def measure(clip, pairs, rng) -> dict:
    keys = ("scene", "again", "colour", "size")
    images = {k: [alt_render.render(p[k], rng, antialias=rng.random() < 0.5) for p in pairs] for k in keys}
    z = {k: clip.encode_images(images[k]) for k in keys}
    t = {k: clip.encode_texts([caption(p[k]) for p in pairs]) for k in ("scene", "colour", "size")}
    out = {}
    for swap in ("colour", "size"):
        same = np.sum(z["scene"] * z["again"], 1)
        other = np.sum(z["scene"] * z[swap], 1)
        out[swap] = {"text_cosine": round(float(np.mean(np.sum(t["scene"] * t[swap], 1))), 4),
                     "image_same_scene_nearer": round(float(np.mean(same > other)), 4),
                     "zero_shot": round(float(np.mean(np.sum(z["scene"] * t["scene"], 1)
                                                      > np.sum(z["scene"] * t[swap], 1))), 4)}
    return out


SWAPS = ("colour", "shape", "size", "duplicate")


def crowded_scenes(n: int, seed: int):
    """n scenes of 3-4 objects by the independent renderer, each with its whole caption and one caption per swap that
    is false of it."""
    from dataclasses import replace
    from clipgpt_core.world.corpus import mixed_scene
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        scene = mixed_scene(rng, (0, 0, 0.5, 0.5))
        o = list(scene.objects)
        pairs = [(i, j) for i in range(len(o)) for j in range(i + 1, len(o))]
        rng.shuffle(pairs)
        swaps = {}
        for kind in SWAPS:
            for i, j in pairs:
                if kind == "duplicate":
                    new = o[:j] + [replace(o[j], colour=o[i].colour, shape=o[i].shape)] + o[j + 1:]
                elif getattr(o[i], kind) != getattr(o[j], kind):
                    new = list(o)
                    new[i] = replace(o[i], **{kind: getattr(o[j], kind)})
                    new[j] = replace(o[j], **{kind: getattr(o[i], kind)})
                else:
                    continue
                d = listing(new, scene.background)
                if not world.is_true(d, scene):
                    swaps[kind] = world.caption_text(d)
                    break
        rows.append((alt_render.render(scene, rng), world.caption_text(listing(o, scene.background)), swaps))
    return rows


def measure_crowded(clip, rows) -> dict:
    z = clip.encode_images([r[0] for r in rows])
    wins = {k: [] for k in SWAPS}
    every = []
    for (_, caption_, swaps), zi in zip(rows, z):
        sims = clip.encode_texts([caption_, *swaps.values()]) @ zi
        for kind, sim in zip(swaps, sims[1:]):
            wins[kind].append(sims[0] > sim)
        every.append(bool(np.all(sims[0] > sims[1:])))
    return {k: round(float(np.mean(v)), 4) for k, v in wins.items()} | {"all": round(float(np.mean(every)), 4)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", default="assets/shapes/clip,runs/clip_unsized,runs/clip_nohn,runs/clip_sizes")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", default="benchmarks/results/binding.json")
    args = p.parse_args(argv)
    missing = [c for c in args.clips.split(",") if not (Path(c) / "open_clip_config.json").is_file()]
    if missing:   # the benchmark-only CLIPs live in runs/: say how to make them rather than fail in load_clip
        raise SystemExit(f"no CLIP at {', '.join(missing)}: train it with the command in this benchmark's --help, "
                         "or pass --clips")
    report = {"command": " ".join(["python -m benchmarks.bench_binding", *sys.argv[1:]]), "n": args.n, "clips": {}}
    crowded = crowded_scenes(args.n, EVAL_SEED + 81)
    for path in args.clips.split(","):
        pairs, rng = scene_pairs(args.n, EVAL_SEED + 80)          # the same scenes and drawings for every CLIP
        clip = load_clip(path)
        report["clips"][path] = measure(clip, pairs, rng) | {"crowded": measure_crowded(clip, crowded)}
        print(path, report["clips"][path], flush=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
