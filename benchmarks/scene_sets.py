"""Render v4's scene prompt sets and how a set of renders of them is judged (benchmarks/scene_judge.py, no model):
two objects (seen and held-out colour-shape pairs), relations, counts and captions of random world scenes, each
phrased by world.caption_text's variations; the same prompts drawn by the independent renderer; variations of
an image judged for the objects and background they keep."""
from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np

from benchmarks import alt_render
from benchmarks.scene_judge import detect, judge_prompt
from clipgpt_core import world
from clipgpt_core.models.planner import scene_for   # true scenes for the ceiling and the variations' sources

SCENE_SETS = {"two_objects": ("train", "heldout"), "relation": ("train",), "count": ("train",),
              "world_captions": ("train", "heldout")}


def _kind(rng: random.Random, split: str, avoid: set[str] = frozenset(), avoid_shapes=frozenset()):
    pairs = [(c, s) for c, s in itertools.product(world.COLOURS, world.SHAPES)
             if world.split_allows(c, s, split) and c not in avoid and s not in avoid_shapes]
    return rng.choice(pairs)


def scene_prompts(n: int, kind: str, split: str, seed: int) -> list[dict]:
    """n prompts of one set -> [{text, description, set, split}]; a held-out two-object prompt holds one
    held-out pair and one seen pair."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        background = rng.choice(list(world.BACKGROUNDS)) if rng.random() < 0.5 else None
        if kind == "world_captions":
            scene = world.sample_scene(rng, n_objects=rng.choice([1, 2, 2, 3, 4]), split=split)
            d = world.describe(scene, rng)
        elif kind == "count":
            c, s = _kind(rng, "train", {background} if background else set())
            d = world.Description((world.Phrase(s, c, "small" if rng.random() < 0.7 else None),),
                                  count=rng.choice([2, 3, 4]), background=background)
        else:
            avoid = {background} if background else set()
            c1, s1 = _kind(rng, split, avoid)
            c2, s2 = _kind(rng, "train", avoid | {c1}, {s1})
            if kind == "relation":
                d = world.Description((world.Phrase(s1, c1), world.Phrase(s2, c2)), relation=rng.choice(world.RELATIONS),
                                      background=background)
            else:
                sizes = [rng.choice([None, "small", "large"]) for _ in range(2)]
                d = world.Description((world.Phrase(s1, c1, sizes[0]), world.Phrase(s2, c2, sizes[1])),
                                      background=background)
                if rng.random() < 0.5:
                    d = dataclasses.replace(d, phrases=d.phrases[::-1])
        if scene_for(d, rng) is None:          # states something no scene can hold (four large objects)
            continue
        out.append({"text": world.caption_text(d, rng), "description": d, "set": kind, "split": split})
    return out


def judge_scenes(prompts: list[dict], images: list[list]) -> dict:
    """Mean of every category of judge_prompt over the images that state it."""
    verdicts = [judge_prompt(p["description"], im) for p, ims in zip(prompts, images) for im in ims]
    keys = dict.fromkeys(k for v in verdicts for k in v if k != "n_objects")
    out = {k: float(np.mean([v[k] for v in verdicts if v.get(k) is not None])) for k in keys}
    return out | {"mean_objects": float(np.mean([v["n_objects"] for v in verdicts])), "n_images": len(verdicts)}


def alt_renders(prompts: list[dict], k: int, rng: random.Random) -> list[list]:
    """k independent renders (benchmarks/alt_render.py) of scenes each prompt is true of."""
    return [[alt_render.render(scene_for(p["description"], rng), rng, antialias=rng.random() < 0.5)
             for _ in range(k)] for p in prompts]


def judge_variations(prompts: list[dict], sources: list, variations: list[list]) -> dict:
    """Each source's objects (colour and shape) and background kept in its variations; objects moved."""
    kept, background, moved = [], [], []
    for p, source, ims in zip(prompts, sources, variations):
        d = p["description"]
        d = dataclasses.replace(d, relation=None, phrases=tuple(dataclasses.replace(q, position=None, size=None)
                                                                 for q in d.phrases))
        src_bg, src_objs = detect(source)
        for im in ims:
            v = judge_prompt(dataclasses.replace(d, background=src_bg), im)
            kept.append(v["binding"])
            background.append(v["background"])
            _, objs = detect(im)
            shifts = [min(np.hypot(o.cx - s.cx, o.cy - s.cy) for o in objs if o.colour == s.colour)
                      for s in src_objs if any(o.colour == s.colour for o in objs)]
            if shifts:
                moved.append(float(np.mean(shifts)) > 4.0)
    return {"objects_kept": float(np.mean(kept)), "background_kept": float(np.mean(background)),
            "layout_moved": float(np.mean(moved)) if moved else None, "n_images": len(kept)}
