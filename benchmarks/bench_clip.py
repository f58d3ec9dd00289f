"""Benchmark the built-in CLIP on held-out ShapesWorld images (seen and held-out combinations).

    python -m benchmarks.bench_clip [--bundle shapes] [--n 1000] [--out benchmarks/results/clip.json]

Reports, separately for seen colour-shape combinations and held-out ones:
  * zero-shot accuracy per attribute on single-object images (clipgpt_core.world.zeroshot protocol);
  * binding: two-object image, true caption vs the caption with the two colours swapped;
  * presence in 3-object scenes: AUC of "is there a {shape}" read as the cosine to "a {shape}" minus
    the mean over the other shapes, and of each colour read the same way through the text embedding
    averaged over "a {colour} {shape}" for all shapes, and of each position through "a {shape} in the
    {position}" averaged over shapes (what Explain's "in the top left" reads);
  * counting: scenes of 1-4 objects that share one shape, candidates "one circle / two circles /
    three circles / four circles" (chance 0.25);
  * text->image recall@1/@5 of full single-object descriptions over N images (a hit is an image
    the description is true of, so exact duplicates of the query's scene also count);
  * the same figures for a random-init model of the same architecture (the chance baseline).
Evaluation images come from seeds the training never uses, drawn with randomised render styles,
and again by an independent renderer written from WORLD.md alone (benchmarks/alt_render.py).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import alt_render

from clipgpt_core import world
from clipgpt_core.world import zeroshot
from clipgpt_core.bundle import load_bundle
from clipgpt_core.explainers.partial import claim_captions
from clipgpt_core.models.clip import create_clip

EVAL_SEED = 1_000_000_007  # training draws from random.Random(0); evaluation seeds are separate


def draw(scene, rng, renderer: str = "world"):
    """Our renderer in a random style, or the independent one (benchmarks/alt_render.py)."""
    if renderer == "alt":
        return alt_render.render(scene, rng, antialias=rng.random() < 0.75)
    return world.render(scene, rng, world.RenderStyle.random(rng))


def single_object_set(n: int, split: str, seed: int, renderer: str = "world"):
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng, n_objects=1, split=split) for _ in range(n)]
    images = [draw(s, rng, renderer) for s in scenes]
    return scenes, images


def zero_shot(clip, scenes, embs) -> dict[str, float]:
    out = {}
    objs = [s.objects[0] for s in scenes]
    truth = {"colour": [o.colour for o in objs], "shape": [o.shape for o in objs],
             "size": [o.size for o in objs], "position": [o.position for o in objs],
             "background": [s.background for s in scenes]}
    for attribute in zeroshot.TEMPLATES:
        knowns = [{"colour": o.colour, "shape": o.shape, "size": o.size, "position": o.position,
                   "background": s.background} for o, s in zip(objs, scenes)]
        for k in knowns:
            k.pop(attribute)
        pred = zeroshot.classify(clip, embs, attribute, knowns)
        out[attribute] = float(np.mean([p == t for p, t in zip(pred, truth[attribute])]))
    return out


def binding(clip, n: int, split: str, seed: int, renderer: str = "world") -> float:
    rng = random.Random(seed)
    correct = 0
    for _ in range(n):
        while True:
            scene = world.sample_scene(rng, n_objects=2, split=split)
            a, b = scene.objects
            if a.colour != b.colour and a.shape != b.shape:
                break
        img = draw(scene, rng, renderer)
        true = f"a {a.colour} {a.shape} and a {b.colour} {b.shape}"
        swapped = f"a {b.colour} {a.shape} and a {a.colour} {b.shape}"
        sims = clip.encode_texts([true, swapped]) @ clip.encode_images([img])[0]
        correct += int(sims[0] > sims[1])
    return correct / n


def averaged(clip, groups: list[list[str]]) -> np.ndarray:
    """(G, D): each group of texts' unit mean embedding (a value read without committing to a shape)."""
    txt = clip.encode_texts([t for g in groups for t in g]).reshape(len(groups), len(groups[0]), -1).mean(1)
    return txt / np.linalg.norm(txt, axis=1, keepdims=True)


def three_object_presence(clip, n: int, split: str, seed: int, renderer: str = "world") -> dict:
    """AUC per shape, colour and position of zero-shot presence on n 3-object scenes."""
    from sklearn.metrics import roc_auc_score
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng, n_objects=3, split=split) for _ in range(n)]
    embs = clip.encode_images([draw(s, rng, renderer) for s in scenes])
    shape_txt = clip.encode_texts([f"a {s}" for s in world.SHAPES])
    colour_txt = averaged(clip, [[f"a {c} {s}" for s in world.SHAPES] for c in world.COLOURS])
    position_txt = averaged(clip, [claim_captions({"position": p}) for p in world.POSITIONS])   # as Explain reads it
    out = {}
    for kind, values, txt in (("shape", world.SHAPES, shape_txt), ("colour", list(world.COLOURS), colour_txt),
                              ("position", world.POSITIONS, position_txt)):
        sims = embs @ txt.T
        score = sims - sims.mean(axis=1, keepdims=True)
        out[kind] = {}
        for k, v in enumerate(values):
            has = [any(getattr(o, kind) == v for o in s.objects) for s in scenes]
            out[kind][v] = round(float(roc_auc_score(has, score[:, k])), 4) if 0 < sum(has) < n else None
    return out


def counting(clip, n: int, split: str, seed: int, renderer: str = "world") -> dict:
    """Scenes of 1-4 objects sharing one shape; pick among "one/two/three/four {shape}s"."""
    from clipgpt_train.clip_facts import count_prompt
    rng = random.Random(seed)
    right, by_count = [], {k: [] for k in (1, 2, 3, 4)}
    for _ in range(n):
        k, bg = rng.randint(1, 4), rng.choice(list(world.BACKGROUNDS))
        shape = rng.choice([s for s in world.SHAPES if any(c != bg and world.split_allows(c, s, split)
                                                           for c in world.COLOURS)])
        colours = [c for c in world.COLOURS if c != bg and world.split_allows(c, shape, split)]
        scene = world.sample_scene(rng, kinds=[(rng.choice(colours), shape) for _ in range(k)], background=bg)
        sims = clip.encode_texts([count_prompt(shape, m) for m in (1, 2, 3, 4)]) @ clip.encode_images(
            [draw(scene, rng, renderer)])[0]
        hit = int(np.argmax(sims)) + 1 == k
        right.append(hit)
        by_count[k].append(hit)
    return {"accuracy": float(np.mean(right)),
            "by_count": {k: round(float(np.mean(v)), 3) for k, v in by_count.items() if v}}


def recall(clip, scenes, embs, ks=(1, 5)) -> dict[str, float]:
    descs = [world.Description((world.Phrase(o.shape, o.colour, o.size, o.position),), background=s.background)
             for s in scenes for o in s.objects]
    texts = [world.caption_text(d) for d in descs]
    sims = clip.encode_texts(texts) @ embs.T                      # (N queries, N images)
    order = np.argsort(-sims, axis=1)
    out = {}
    for k in ks:
        hits = [any(world.is_true(d, scenes[j]) for j in order[i, :k]) for i, d in enumerate(descs)]
        out[f"R@{k}"] = float(np.mean(hits))
    return out


SETS = {"seen": ("train", "world", 0), "heldout": ("heldout", "world", 1),
        "seen_alt_renderer": ("train", "alt", 2), "heldout_alt_renderer": ("heldout", "alt", 3),
        # every colour-shape pair, uniformly, by the independent renderer: how the bar is checked
        "any_alt_renderer": ("any", "alt", 4)}


def evaluate(clip, n: int, sets=tuple(SETS)) -> dict:
    result = {}
    for name in sets:
        split, renderer, offset = SETS[name]
        scenes, images = single_object_set(n, split, EVAL_SEED + offset, renderer)
        embs = clip.encode_images(images)
        result[name] = {"zero_shot": zero_shot(clip, scenes, embs),
                        "binding": binding(clip, n // 2, split, EVAL_SEED + 10 + offset, renderer),
                        **recall(clip, scenes, embs),
                        "presence_3_objects": three_object_presence(clip, n, split, EVAL_SEED + 20 + offset,
                                                                    renderer),
                        "counting": counting(clip, n // 2, split, EVAL_SEED + 30 + offset, renderer)}
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", default=None, help="bundle name or path (default: built-in)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/clip.json")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {', '.join(SETS)}")
    p.add_argument("--merge", action="store_true", help="add these sets to an existing --out file")
    args = p.parse_args()
    t0 = time.time()
    sets = [s for s in args.sets.split(",") if s]
    bundle = load_bundle(args.bundle, strict=False)   # only its CLIP is measured: other parts may be stale
    report = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).exists() else {}
    run = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "n_images": args.n, "model": bundle.clip.model_name}
    if args.merge:
        report.setdefault("merged_runs", []).append(run | {"sets": sets})
    else:
        report |= run
    report.setdefault("trained", {}).update(evaluate(bundle.clip, args.n, sets))
    if not args.no_baseline:
        report.setdefault("random_init_baseline", {}).update(
            evaluate(create_clip(bundle.clip.model_name), args.n, sets))
    report["seconds" if not args.merge else "merged_seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
