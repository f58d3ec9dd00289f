"""The ground truth the CLIP trainer (clipgpt_train.clip) learns from besides captions: the facts a
scene holds and a caption states (multi-hot over FACTS), which captions are true of which scenes,
and the presence, count and binding prompts its training-only heads read through CLIP's text tower."""
from __future__ import annotations

import random

import numpy as np

from clipgpt_core import world
from clipgpt_core.explainers.partial import claim_captions

PAIRS = [(c, s) for c in world.COLOURS for s in world.SHAPES]
# held-out pairs never occur in training: asking the model to say they are absent would teach it that
TRAIN_PAIRS = [cs for cs in PAIRS if world.split_allows(*cs, "train")]
FACTS = ([f"shape:{v}" for v in world.SHAPES] + [f"colour:{v}" for v in world.COLOURS]
         + [f"size:{v}" for v in world.SIZES] + [f"position:{v}" for v in world.POSITIONS]
         + [f"background:{v}" for v in world.BACKGROUNDS] + [f"count:{n}" for n in (1, 2, 3, 4)]
         # colour-shape conjunctions: without them the probes ask only for a bag of attributes, and
         # both towers learned one (a caption and its colour-swapped twin at cosine 0.95-0.998)
         + [f"pair:{c} {s}" for c, s in TRAIN_PAIRS])


def scene_facts(scene) -> np.ndarray:
    """Multi-hot ground truth: which shapes, colours, sizes, positions, colour-shape pairs occur;
    background; count."""
    on = {f"background:{scene.background}", f"count:{len(scene.objects)}"}
    for o in scene.objects:
        on |= {f"shape:{o.shape}", f"colour:{o.colour}", f"size:{o.size}", f"position:{o.position}",
               f"pair:{o.colour} {o.shape}"}
    return np.array([f in on for f in FACTS], dtype=np.float32)


def states_only_train_pairs(d: world.Description) -> bool:
    return all(p.colour is None or world.split_allows(p.colour, p.shape, "train") for p in d.phrases)


def stated_facts(d: world.Description) -> np.ndarray:
    """Multi-hot of what a caption states: its shapes, stated colours, sizes, positions, colour-shape
    pairs and background, and how many objects it speaks of."""
    on = {f"count:{d.count or len(d.phrases)}"} | ({f"background:{d.background}"} if d.background else set())
    for p in d.phrases:
        on |= {f"shape:{p.shape}"} | {f"{a}:{getattr(p, a)}" for a in ("colour", "size", "position") if getattr(p, a)}
        on |= {f"pair:{p.colour} {p.shape}"} if p.colour else set()
    return np.array([f in on for f in FACTS], dtype=np.float32)


def truth_matrix(descs, scenes) -> np.ndarray:
    """truth[i, j] = caption i is true of scene j (ground truth, not the model)."""
    b = len(scenes)
    truth = np.eye(b, dtype=bool)
    n_objs = [len(s.objects) for s in scenes]
    for i, d in enumerate(descs):
        wanted = d.count if d.count else len(d.phrases)
        for j in range(b):
            if i != j and n_objs[j] == wanted and d.background in (None, scenes[j].background):
                truth[i, j] = world.is_true(d, scenes[j])
    return truth


def count_prompt(shape: str, n: int) -> str:
    return f"{world.COUNT_WORDS[n]} {world.PLURALS[shape] if n > 1 else shape}"


PRESENCE_SHAPES = [f"a {s}" for s in world.SHAPES]                                   # (6,)
PRESENCE_COLOURS = [f"a {c} {s}" for c, s in PAIRS]                                  # (8 * 6,)
# size-colour-shape conjunctions, train pairs only (size_conjunctions)
PRESENCE_SIZES = [f"a {z} {c} {s}" for z in world.SIZES for c, s in TRAIN_PAIRS]     # (2 * 42,)
COUNTS = [count_prompt(s, n) for s in world.SHAPES for n in (1, 2, 3, 4)]           # (6 * 4,)
# where an object is, read as Explain reads "in the top left": "a {shape} in the {position}" for every shape
PRESENCE_POSITIONS = [t for p in world.POSITIONS for t in claim_captions({"position": p})]  # (9 * 6,)


def binding_texts(scene, rng: random.Random, attr: str = "colour") -> tuple[str, str] | None:
    """The scene's objects listed by colour and shape (with attr "size": size, colour and shape), and the same
    listing with two objects of different shapes trading that attribute (a false caption); None if no such pair."""
    objs = list(scene.objects)
    if attr == "colour":
        pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))
                 if objs[i].colour != objs[j].colour and objs[i].shape != objs[j].shape
                 and world.split_allows(objs[j].colour, objs[i].shape, "train")
                 and world.split_allows(objs[i].colour, objs[j].shape, "train")]
    else:
        pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))
                 if getattr(objs[i], attr) != getattr(objs[j], attr) and objs[i].shape != objs[j].shape]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    order = list(range(len(objs)))
    rng.shuffle(order)

    def listing(values):
        if attr == "colour":   # the shipped recipe's wording ("a orange ..."), kept so that it reproduces
            parts = [f"a {values[k]} {objs[k].shape}" for k in order]
            return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        phrases = [world.Phrase(objs[k].shape, objs[k].colour, values[k]) for k in order]
        return world.caption_text(world.Description(tuple(phrases)))
    values = [getattr(o, attr) for o in objs]
    swapped = list(values)
    swapped[i], swapped[j] = values[j], values[i]
    return listing(values), listing(swapped)
