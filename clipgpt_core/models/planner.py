"""The renderer's planner: a prompt -> what it states about the world -> a scene layout -> a layout map.

    reading = read_prompt("a red star left of a blue circle, very shiny")
    reading.description, reading.unknown          # Description(...), ("very", "shiny")
    plan = plan_layout(reading, random.Random(0))  # Plan(reading, scene): boxes, colours, shapes, background
    layout_map([plan.scene])                       # (1, LAYOUT_CHANNELS, 32, 32) float32

LLM-grounded Diffusion's two steps with the world's own parts: the caption parser reads the prompt
(words outside the world's vocabulary are reported, not fatal), `scene_for` draws a scene the
reading is true of (whatever the prompt leaves unstated is drawn at random from the seed), and the
layout map puts each object's colour and shape, one-hot, over the latent cells its bounding box covers,
with the background one-hot everywhere. The UNet reads the map as extra input channels (as Stable
Diffusion's depth-to-image and inpainting UNets read theirs), so colour and shape are bound by place.
No torch here: the app lays out its tab from this module before any model is loaded.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace

import numpy as np

from .. import world
from ..world.captions import normalise, parse_caption, singular

COLOUR_CHANNELS = list(world.COLOURS)
SHAPE_CHANNELS = list(world.SHAPES)
BACKGROUND_CHANNELS = list(world.BACKGROUNDS)
ONE_HOT_CHANNELS = len(COLOUR_CHANNELS) + len(SHAPE_CHANNELS) + len(BACKGROUND_CHANNELS)  # 17
BOX_CHANNELS = ONE_HOT_CHANNELS + 2       # + where in its object's box a cell lies: (u, v) in [-1, 1]
LAYOUT_CHANNELS = BOX_CHANNELS + 1        # + the share of the cell the objects' silhouettes cover

NEGATIONS = {"not", "no", "without", "except"}
_DETERMINERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_GLUE = {"in", "at", "on", "the", "of", "and", ",", "with", "background", "corner"}
_POSITION_WORDS = {w for p in world.POSITIONS for w in p.split()}
# an object whose shape is not said ("a red object", or a bare "red", as Explain's answers read): the planner
# draws its shape at random, as it draws every other attribute a prompt leaves unstated
ANY_SHAPE = "object"
_ANY_NOUNS = {"object", "objects", "shape", "shapes", "thing", "things", "something"}
VOCABULARY = (set(_DETERMINERS) | set(world.SIZES) | set(world.COLOURS) | set(world.SHAPES) | _ANY_NOUNS
              | set(world.PLURALS.values()) | set(world.BACKGROUNDS) | _POSITION_WORDS | _GLUE
              | {w for r in world.RELATIONS for w in r.split()})


@dataclass(frozen=True)
class Reading:
    """What a prompt states in the world's language: the Description (None when no object was
    understood), the words outside the world's vocabulary, and whether the whole prompt parsed."""
    text: str
    description: world.Description | None
    unknown: tuple[str, ...] = ()
    exact: bool = False
    negated: tuple[str, ...] = ()     # phrases left out because the prompt negates them ("not a square")

    def summary(self) -> str:
        """One line for a user: what was understood, and what was not."""
        if self.description is None:
            said = "no object of the world understood: rendered from the text alone"
        else:
            said = "read as: " + world.caption_text(self.description)
        if self.negated:
            said += f" · left out: {', '.join(self.negated)}"
        if self.unknown:
            said += f" · not understood: {', '.join(self.unknown)}"
        return said


@dataclass(frozen=True)
class Plan:
    """One image's layout: the reading it came from and the scene drawn for it (None: no objects)."""
    reading: Reading
    scene: world.Scene | None
    note: str = ""        # what of the reading the layout could not honour

    def boxes(self) -> list[dict]:
        """[{colour, shape, size, box: (x0, y0, x1, y1) in image pixels}] for display."""
        if self.scene is None:
            return []
        return [{"colour": o.colour, "shape": o.shape, "size": o.size,
                 "box": (o.cx - o.extent / 2, o.cy - o.extent / 2, o.cx + o.extent / 2, o.cy + o.extent / 2)}
                for o in self.scene.objects]


def _words(text: str) -> list[str]:
    """The prompt's words in the caption language's spelling, punctuation other than commas dropped."""
    return normalise(re.sub(r"[^a-z0-9,<>_\- ]", " ", text.lower())).split()


def read_prompt(text: str) -> Reading:
    """The prompt in the world's language. First the exact caption grammar; then the same without the
    words the world does not know; then phrase by phrase (each shape noun with the size, colour and count
    words before it and a position after it; a background; a relation between the first two phrases)."""
    d = parse_caption(text)
    if d is not None:
        return Reading(text, d, (), True)
    words, negated = _drop_negated(_words(text))
    unknown = tuple(dict.fromkeys(w for w in words if w not in VOCABULARY))
    known = [w for w in words if w in VOCABULARY]
    d = parse_caption(" ".join(known))
    if d is None:
        d = _read_phrases(known)
    if d is None:           # no shape named: attributes alone ("red", "large in the top left") are an object's
        said = [w for i, w in enumerate(known) if known[i + 1:i + 2] != ["background"]]   # not the ground's colour
        if any(w in world.COLOURS or w in world.SIZES or w in _POSITION_WORDS for w in said):
            adjectives = [w for w in said if w in world.COLOURS or w in world.SIZES]
            rest = list(known)
            for w in adjectives:
                rest.remove(w)
            d = _read_phrases(["a", *adjectives, ANY_SHAPE, *rest])
    return Reading(text, d, unknown, False, tuple(negated))


def _drop_negated(words: list[str]) -> tuple[list[str], list[str]]:
    """"a red star but not a square" -> (["a", "red", "star", "but"], ["not a square"]): a negated phrase, up to
    its shape noun, is not drawn."""
    out, dropped, skipping = [], [], False
    for w in words:
        if skipping:
            dropped[-1] += " " + w
            skipping = singular(w) is None
        elif w in NEGATIONS:
            dropped.append(w)
            skipping = True
        else:
            out.append(w)
    return out, dropped


def _read_phrases(words: list[str]) -> world.Description | None:
    background = None
    for i, w in enumerate(words[:-1]):
        if words[i + 1] == "background" and w in world.BACKGROUNDS:
            background = w
            words = words[:i] + words[i + 2:]
            break
    phrases, counts, spans = [], [], []
    for i, w in enumerate(words):
        shape = ANY_SHAPE if w in _ANY_NOUNS else singular(w)
        if shape is None:
            continue
        j, colour, size, count = i - 1, None, None, None
        while j >= 0 and words[j] in set(world.COLOURS) | set(world.SIZES) | set(_DETERMINERS):
            v = words[j]
            if v in world.SIZES:
                size = size or v
            elif v in world.COLOURS:
                colour = colour or v
            else:
                count = _DETERMINERS[v]
                break
            j -= 1
        rest = " ".join(words[i + 1:i + 5])
        position = next((p for p in sorted(world.POSITIONS, key=len, reverse=True)
                         if re.match(rf"(in|at|on) the {p}\b", rest)), None)
        plural = w in {"objects", "shapes", "things"} if shape == ANY_SHAPE else w != shape
        phrases.append(world.Phrase(shape, colour, size, position))
        counts.append(count or (2 if plural else 1))
        spans.append((j, i))
    if not phrases:
        return None
    relation = None
    if len(phrases) == 2 and counts == [1, 1]:
        between = " ".join(words[spans[0][1] + 1:spans[1][0] + 1])
        relation = next((r for r in world.RELATIONS if re.search(rf"\b{r}\b", between)), None)
    if relation:
        return world.Description(tuple(phrases), relation=relation, background=background)
    if len(phrases) == 1 and counts[0] > 1 and phrases[0].shape != ANY_SHAPE:   # "two objects" may differ
        return world.Description((phrases[0],), count=counts[0], background=background)
    expanded = [p for p, c in zip(phrases, counts) for _ in range(c)][:4]   # an image holds at most four
    return world.Description(tuple(expanded), background=background)


def _cell_range(position: str | None, r: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a centre may lie for an object of reach r: inside the canvas, and inside the position's
    3x3 cell when one is stated -> ((x_lo, x_hi), (y_lo, y_hi))."""
    lo, hi = r, world.CANVAS - r
    if position is None:
        return (lo, hi), (lo, hi)
    k = world.POSITIONS.index(position)
    row, col = divmod(k, 3)
    third = world.CANVAS / 3
    xs = (max(lo, col * third), min(hi, (col + 1) * third - 1e-3))
    ys = (max(lo, row * third), min(hi, (row + 1) * third - 1e-3))
    return xs, ys


def scene_for(d: world.Description, rng: random.Random, tries: int = 400) -> world.Scene | None:
    """A random scene that `d` is true of (world.is_true(d, scene)): one object per phrase (or `count` of the
    one phrase), every attribute the description leaves unstated drawn at random (colour, size,
    position, background, angle), stated positions inside their cell, relations at least
    world.RELATION_MIN_PX apart. The layout planner of the renderer. None when no placement was found
    in `tries` attempts (e.g. four large objects stated in one cell)."""
    said = list(d.phrases) * d.count if d.count else list(d.phrases)
    stated = {p.colour for p in said if p.colour}
    for _attempt in range(tries):
        phrases = [replace(p, shape=rng.choice(list(world.SHAPES))) if p.shape == ANY_SHAPE else p for p in said]
        if phrases != said:
            d = replace(d, phrases=tuple(phrases), count=None)
        colours = [p.colour or rng.choice([c for c in world.COLOURS if c != d.background] or list(world.COLOURS))
                   for p in phrases]
        backgrounds = ([b for b in world.BACKGROUNDS if b not in colours]
                       or [b for b in world.BACKGROUNDS if b not in stated])
        bg = d.background or rng.choice(backgrounds or list(world.BACKGROUNDS))
        objs: list[world.Obj] = []
        for p, colour in zip(phrases, colours):
            size = p.size or rng.choice(list(world.SIZES))
            extent = rng.uniform(*world.SIZES[size])
            r = extent * 0.72
            (x0, x1), (y0, y1) = _cell_range(p.position, r)
            if x0 > x1 or y0 > y1:                     # a large object whose reach leaves its cell
                (x0, x1), (y0, y1) = _cell_range(p.position, extent / 2)
            for _ in range(50):
                cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if world.fits(cx, cy, r, objs):
                    objs.append(world.Obj(colour, p.shape, size, cx, cy, extent, rng.uniform(-10, 10)))
                    break
            else:
                break
        if len(objs) == len(phrases):
            scene = world.Scene(bg, tuple(objs))
            if world.is_true(d, scene):
                return scene
    return None


def plan_layout(reading: Reading, rng: random.Random, vary_layout: bool = False) -> Plan:
    """A scene the reading is true of, drawn with `rng`. vary_layout drops stated positions and relations
    (variations keep what objects there are, not where). When no placement satisfies everything stated,
    positions and relations are let go before giving up (the Reading still says what was asked)."""
    d = reading.description
    if d is None:
        return Plan(reading, None)
    if vary_layout:
        d = replace(d, relation=None, phrases=tuple(replace(p, position=None) for p in d.phrases))
    scene = scene_for(d, rng)
    if scene is not None:
        return Plan(reading, scene)
    d = replace(d, relation=None, phrases=tuple(replace(p, position=None) for p in d.phrases))
    scene = scene_for(d, rng)
    if scene is not None:
        return Plan(reading, scene, "positions and relation let go: no placement holds them all")
    d = replace(d, phrases=tuple(replace(p, size=None) for p in d.phrases))   # e.g. four large objects
    return Plan(reading, scene_for(d, rng), "sizes let go: so many objects that large do not fit")


def layout_map(scenes: list[world.Scene | None], size: int = 32, channels: int = LAYOUT_CHANNELS) -> np.ndarray:
    """scenes -> (N, channels, size, size) float32: per latent cell, the share of it that each object's bounding
    box covers, in that object's colour and shape channels; the background's channel is 1 everywhere; and the
    cell's place in its object's box, (u, v) from -1 (left, top edge) to 1 (right, bottom), 0 outside boxes
    (GLIGEN gives its boxes' coordinates to the UNet too; here they are per cell, so an outline is a function of
    shape and (u, v)); and the share of the cell each object's silhouette covers, drawn from the world's shape
    spec (LLM-grounded Diffusion composes per-object masks; here the planner hands them to the UNet, so a small
    star's points are stated, not left for a 5x5-cell box to imply). Fewer channels give the earlier maps:
    BOX_CHANNELS without the silhouettes, ONE_HOT_CHANNELS without the coordinates either. A None scene
    (nothing understood) is all zeros: the UNet then renders from the text alone."""
    if channels not in (ONE_HOT_CHANNELS, BOX_CHANNELS, LAYOUT_CHANNELS):
        raise ValueError(f"a layout map has {ONE_HOT_CHANNELS}, {BOX_CHANNELS} or {LAYOUT_CHANNELS} channels, "
                         f"not {channels}")
    k = world.CANVAS // size                                   # image pixels a latent cell
    centres = np.arange(world.CANVAS) + 0.5                     # pixel centres
    cells = (np.arange(size) + 0.5) * k                         # latent cell centres, in pixels
    out = np.zeros((len(scenes), channels, size, size), np.float32)
    nc, ns = len(COLOUR_CHANNELS), len(SHAPE_CHANNELS)
    for i, scene in enumerate(scenes):
        if scene is None:
            continue
        for o in scene.objects:
            h = o.extent / 2
            inside_x = (np.abs(centres - o.cx) <= h).astype(np.float32)   # (64,)
            inside_y = (np.abs(centres - o.cy) <= h).astype(np.float32)
            cover = np.outer(inside_y, inside_x).reshape(size, k, size, k).mean(axis=(1, 3))   # (size, size)
            out[i, COLOUR_CHANNELS.index(o.colour)] += cover
            out[i, nc + SHAPE_CHANNELS.index(o.shape)] += cover
            if channels >= BOX_CHANNELS:
                mine = cover > 0
                u, v = np.meshgrid(np.clip((cells - o.cx) / h, -1, 1), np.clip((cells - o.cy) / h, -1, 1))
                out[i, ONE_HOT_CHANNELS] = np.where(mine, u, out[i, ONE_HOT_CHANNELS])
                out[i, ONE_HOT_CHANNELS + 1] = np.where(mine, v, out[i, ONE_HOT_CHANNELS + 1])
            if channels == LAYOUT_CHANNELS:
                out[i, BOX_CHANNELS] += world.silhouette(o, size)
        out[i, nc + ns + BACKGROUND_CHANNELS.index(scene.background)] = 1.0
    np.minimum(out[:, :ONE_HOT_CHANNELS], 1.0, out=out[:, :ONE_HOT_CHANNELS])
    if channels == LAYOUT_CHANNELS:
        np.minimum(out[:, BOX_CHANNELS], 1.0, out=out[:, BOX_CHANNELS])
    return out


def completions(text: str) -> list[str]:
    """A caption of the world with its unstated background and sizes filled in every way (a caption that does not
    parse, or states both, comes back alone): the candidates a CLIP vector's reading is completed from."""
    d = parse_caption(text)
    if d is None:
        return [text]
    backgrounds = [d.background] if d.background else list(world.BACKGROUNDS)
    open_sizes = [i for i, p in enumerate(d.phrases) if p.size is None]
    out = []
    for b in backgrounds:
        for sizes in itertools.product(list(world.SIZES), repeat=len(open_sizes)):
            phrases = list(d.phrases)
            for i, size in zip(open_sizes, sizes):
                phrases[i] = replace(phrases[i], size=size)
            out.append(world.caption_text(replace(d, phrases=tuple(phrases), background=b)))
    return out


def plan_prompts(prompts: list[str], num_images: int, seed: int, vary_layout: bool = False) -> list[Plan]:
    """num_images plans per prompt, prompt by prompt; the same seed gives the same plans."""
    rng = random.Random(seed)
    readings = [read_prompt(p) for p in prompts]
    return [plan_layout(r, rng, vary_layout) for r in readings for _ in range(num_images)]


def draw_plan(plan: Plan, image=None, side: int = 256):
    """The plan's layout for display: each object's box and name over `image` (a render, scaled up with hard
    edges) or over a flat canvas of the planned background -> a PIL image `side` px wide."""
    from PIL import Image, ImageDraw
    bg = world.BACKGROUNDS[plan.scene.background] if plan.scene else (128, 128, 128)
    base = image.convert("RGB") if image is not None else Image.new("RGB", (world.CANVAS, world.CANVAS), bg)
    f = side / base.width
    out = base.resize((side, round(base.height * f)), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(out)
    for box in plan.boxes():
        x0, y0, x1, y1 = (v * f for v in box["box"])
        ink = (255, 255, 255) if sum(bg) < 384 else (0, 0, 0)
        draw.rectangle([x0, y0, x1, y1], outline=ink, width=2)
        draw.rectangle([x0 + 2, y0 + 2, x1 - 2, y1 - 2], outline=world.COLOURS[box["colour"]], width=1)
        draw.text((x0 + 3, max(0, y0 - 11)), f"{box['colour']} {box['shape']}", fill=ink)
    return out
