"""ShapesWorld as streams of text and (image, caption) pairs: what the trainers learn from and what
Explain draws its candidate phrases from. No rendering for captions alone."""
from __future__ import annotations

import random

from . import world


def world_captions(rng: random.Random, n: int, split: str = "train",
                   object_mix=(0.4, 0.3, 0.2, 0.1)) -> list[str]:
    """n captions of fresh random ShapesWorld scenes (no rendering: text only)."""
    out = []
    for _ in range(n):
        k = rng.choices([1, 2, 3, 4], weights=object_mix)[0]
        scene = world.sample_scene(rng, n_objects=k, split=split)
        out.append(world.caption_text(world.describe(scene, rng), rng))
    return out


OBJECT_MIX = (0.5, 0.3, 0.12, 0.08)   # shares of scenes with 1, 2, 3 and 4 objects


def world_pairs(rng: random.Random, n: int, split: str = "train", object_mix=OBJECT_MIX,
                must_state: frozenset = frozenset()):
    """n rendered examples in random render styles -> images, captions, scenes, descriptions.
    must_state: attributes every caption states (world.describe)."""
    images, captions, scenes, descs = [], [], [], []
    for _ in range(n):
        k = rng.choices([1, 2, 3, 4], weights=object_mix)[0]
        scene = world.sample_scene(rng, n_objects=k, split=split)
        images.append(world.render(scene, rng, world.RenderStyle.random(rng)))
        descs.append(world.describe(scene, rng, must_state=must_state))
        captions.append(world.caption_text(descs[-1], rng))
        scenes.append(scene)
    return images, captions, scenes, descs
