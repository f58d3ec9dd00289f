"""A model-free judge of ShapesWorld scenes: every object's colour, shape, size and place, and the background.

    background, objects = detect(image)             # "gray", [Detected(colour, shape, size, cx, cy, extent, area)]
    verdict = judge_prompt(description, image)      # {"present": True, "binding": False, "relation": None, ...}

1. Background: the WORLD.md palette colour nearest to most border pixels; its RGB is the median of those
   pixels. Foreground: pixels farther from it than a threshold set by the border's own noise.
2. Objects: 4-connected foreground components; each pixel within NEAR of a WORLD.md object colour votes
   for it (blended edge pixels do not vote; nor does the background's own colour, which no object has).
   A component in which two colours each hold MIN_AREA pixels within STRICT of them is split between them
   (objects never overlap, but a render may let two touch).
   A component with no colour votes, or under MIN_AREA pixels, is no object.
3. Shape: benchmarks/silhouette.py's judge on an image holding that object alone (every other pixel set
   to the background). Size: the component's larger bounding-box side, large above 18 px (WORLD.md: small
   10-14 px, large 22-28 px). Place: the centroid, its 3 x 3 cell, relations by world.relation_holds.
4. A prompt is judged against world.Description (the world's own caption parser reads the prompt) in
   T2I-CompBench / GenEval categories: every stated object present (shape), bound (colour and shape of one
   object), relation, count, extra objects, outline by size, position cell, background, and the whole
   caption true of the image (world.is_true on the detected scene).

Benchmarks only: imports clipgpt_core.world for vocabulary and the world's rules, never a project model.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from benchmarks.silhouette import MIN_THRESHOLD, border_pixels, judge_shape
from clipgpt_core import world

NEAR = 60.0            # RGB distance within which a pixel votes for a palette colour
STRICT = 35.0          # ... and within which it counts towards naming a second object in one component
MIN_AREA = 12          # px: smaller colour regions are specks, not objects (a small star covers ~30 px)
LARGE_PX = 18.0        # bounding-box side separating small (10-14 px) from large (22-28 px)
OBJECT_NAMES = list(world.COLOURS)
OBJECT_RGB = np.array(list(world.COLOURS.values()), dtype=np.float64)               # (8, 3)
BACKGROUND_NAMES = list(world.BACKGROUNDS)
BACKGROUND_RGB = np.array(list(world.BACKGROUNDS.values()), dtype=np.float64)       # (3, 3)


@dataclass(frozen=True)
class Detected:
    colour: str
    shape: str | None
    size: str
    cx: float
    cy: float
    extent: float
    area: int

    def as_obj(self) -> world.Obj:
        return world.Obj(self.colour, self.shape or "?", self.size, self.cx, self.cy, self.extent, 0.0)


def detect(image: Image.Image) -> tuple[str, list[Detected]]:
    """-> (background name, the objects found, largest first)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float64)                       # (H, W, 3)
    border = border_pixels(x)
    votes = np.linalg.norm(border[:, None] - BACKGROUND_RGB[None], axis=-1).argmin(1)
    background = BACKGROUND_NAMES[int(np.bincount(votes, minlength=3).argmax())]
    near = border[votes == BACKGROUND_NAMES.index(background)]
    bg = np.median(near, axis=0)
    dist = np.linalg.norm(x - bg, axis=-1)
    noise = float(np.median(np.linalg.norm(border - bg, axis=1)))
    foreground = dist > max(MIN_THRESHOLD, 4.0 * noise)
    to_colour = np.linalg.norm(x[:, :, None] - OBJECT_RGB[None, None], axis=-1)   # (H, W, 8)
    # an object is never its background's colour (WORLD.md): pixels near it are the background's edge
    if background in OBJECT_NAMES:
        to_colour[:, :, OBJECT_NAMES.index(background)] = np.inf
    nearest, gap = to_colour.argmin(-1), to_colour.min(-1)
    labels, n = ndimage.label(foreground)
    found = []
    for k in range(1, n + 1):
        comp = labels == k
        # colours with a core of MIN_AREA pixels close to them name the objects of the component; blended
        # edge pixels (between an object and the background) are far from every colour and do not
        strict = np.bincount(nearest[comp & (gap <= STRICT)], minlength=len(OBJECT_NAMES))
        named = [c for c in np.argsort(-strict) if strict[c] >= MIN_AREA]
        if not named:                              # a render's colour a little off: the loose vote, one colour
            loose = np.bincount(nearest[comp & (gap <= NEAR)], minlength=len(OBJECT_NAMES))
            named = [int(loose.argmax())] if loose.max() >= MIN_AREA else []
        if not named:
            continue
        if len(named) == 1:
            parts = [(named[0], comp)]
        else:                                      # two touching objects: each pixel to the nearer colour
            owner = np.array(named)[to_colour[:, :, named].argmin(-1)]
            parts = [(c, comp & (owner == c)) for c in named]
        for c, mask in parts:
            if mask.sum() >= MIN_AREA:
                found.append(_describe(x, bg, OBJECT_NAMES[c], mask))
    return background, sorted(found, key=lambda d: -d.area)


def _describe(x: np.ndarray, bg: np.ndarray, colour: str, mask: np.ndarray) -> Detected:
    alone = np.where(ndimage.binary_dilation(mask, iterations=1)[:, :, None], x, bg)
    shape, _ = judge_shape(Image.fromarray(np.clip(alone, 0, 255).astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    extent = float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    return Detected(colour, shape, "large" if extent > LARGE_PX else "small", float(xs.mean() + 0.5),
                    float(ys.mean() + 0.5), extent, int(mask.sum()))


# ----------------------------------------------------------------------------- judging a prompt
def _phrases(d: world.Description) -> list[world.Phrase]:
    return list(d.phrases) * d.count if d.count else list(d.phrases)


def assign(phrases, objects, ok) -> tuple[Detected, ...] | None:
    """Distinct objects, one per phrase, with ok(phrase, object) for every pair; None when there are none."""
    for perm in itertools.permutations(objects, len(phrases)):
        if all(ok(p, o) for p, o in zip(phrases, perm)):
            return perm
    return None


def judge_prompt(d: world.Description, image: Image.Image) -> dict:
    """Per category: True / False, or None where the prompt does not state it."""
    background, objects = detect(image)
    objects = objects[:6]                                                    # the permutations stay small
    phrases = _phrases(d)
    bound = lambda p, o: o.shape == p.shape and p.colour in (None, o.colour)   # noqa: E731
    out = {"n_objects": len(objects),
           "present": assign(phrases, objects, lambda p, o: o.shape == p.shape) is not None,
           "binding": assign(phrases, objects, bound) is not None,
           "extra": len(objects) > len(phrases),
           "background": None if d.background is None else background == d.background,
           "caption_true": world.is_true(d, world.Scene(background, tuple(o.as_obj() for o in objects)))}
    if d.relation:
        out["relation"] = any(world.relation_holds(d.relation, a, b) for a, b in itertools.permutations(objects, 2)
                              if bound(phrases[0], a) and bound(phrases[1], b))
    if d.count:
        p = phrases[0]
        of_colour = [o for o in objects if p.colour in (None, o.colour)]
        out["count"] = len(of_colour) == d.count and len(objects) == d.count
        out["count_shape"] = out["count"] and all(o.shape == p.shape for o in objects)
    positioned = [p for p in phrases if p.position]
    if positioned:
        out["position"] = all(any(bound(p, o) and o.as_obj().position == p.position for o in objects)
                              for p in positioned)
    sized = [p for p in phrases if p.size]
    if sized:
        out["size"] = all(any(bound(p, o) and o.size == p.size for o in objects) for p in sized)
    # outline by stated size: an object of the stated colour (unique in the prompt) drawn in the stated shape
    colours = [p.colour for p in phrases]
    for size in world.SIZES:
        hits = []
        for p in phrases:
            if p.size == size and p.colour and colours.count(p.colour) == 1:
                mine = [o for o in objects if o.colour == p.colour]
                if mine:
                    hits.append(mine[0].shape == p.shape)
        if hits:
            out[f"outline_{size}"] = float(np.mean(hits))
    return out
