"""ShapesWorld as streams of text and (image, caption) pairs: what the trainers learn from and what
Explain draws its candidate phrases from. No rendering for captions alone."""
from __future__ import annotations

import random

from . import scenes as world   # the spec: world.COLOURS, world.render, ...


def mixed_scene(rng: random.Random, object_mix, split: str = "train", large_share: float = 0.0) -> world.Scene:
    """A random scene of 1-4 objects, drawn with weights object_mix; a single object is large
    `large_share` of the time (0: the world's own sizes, and no extra draw from rng)."""
    k = rng.choices([1, 2, 3, 4], weights=object_mix)[0]
    sizes = ["large"] if k == 1 and large_share > 0 and rng.random() < large_share else None
    return world.sample_scene(rng, n_objects=k, split=split, sizes=sizes)


def world_captions(rng: random.Random, n: int, split: str = "train",
                   object_mix=(0.4, 0.3, 0.2, 0.1)) -> list[str]:
    """n captions of fresh random ShapesWorld scenes (no rendering: text only)."""
    out = []
    for _ in range(n):
        scene = mixed_scene(rng, object_mix, split)
        out.append(world.caption_text(world.describe(scene, rng), rng))
    return out


OBJECT_MIX = (0.5, 0.3, 0.12, 0.08)   # shares of scenes with 1, 2, 3 and 4 objects


def world_pairs(rng: random.Random, n: int, split: str = "train", object_mix=OBJECT_MIX,
                must_state: frozenset = frozenset()):
    """n rendered examples in random render styles -> images, captions, scenes, descriptions.
    must_state: attributes every caption states (world.describe)."""
    images, captions, scenes, descs = [], [], [], []
    for _ in range(n):
        scene = mixed_scene(rng, object_mix, split)
        images.append(world.render(scene, rng, world.RenderStyle.random(rng)))
        descs.append(world.describe(scene, rng, must_state=must_state))
        captions.append(world.caption_text(descs[-1], rng))
        scenes.append(scene)
    return images, captions, scenes, descs


def world_scenes(rng: random.Random, n: int, split: str = "train", object_mix=OBJECT_MIX,
                 large_share: float = 0.0):
    """n rendered scenes in random render styles, without text -> images, scenes (mixed_scene's sizes)."""
    images, scenes = [], []
    for _ in range(n):
        scenes.append(mixed_scene(rng, object_mix, split, large_share))
        images.append(world.render(scenes[-1], rng, world.RenderStyle.random(rng)))
    return images, scenes


def vocabulary() -> list[str]:
    """Every word the world writes: its captions' (captions.py) and its edits' and question's (edits.py). A model
    trained on the world's texts writes only these (its cfg.writes: caption_prior.py)."""
    from .captions import caption_words
    from .edits import edit_words
    return sorted(caption_words() | edit_words())
