"""ShapesWorld: a procedural image-caption world with ground truth (docs/world.md).

Three layers, each deterministic given a seed:
  1. `sample_scene(rng)`        -> Scene (background + non-overlapping objects)
  2. `render(scene, rng)`       -> 64x64 RGB PIL image
  3. `describe(scene, rng)`     -> Description (what a caption states) -> `caption_text(...)`

Captions are built from a structured `Description`, so truthfulness is checked on
structure (`is_true(description, scene)`), and hard negatives (one stated fact
changed) are structured edits that are verified false against the scene.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 64
BACKGROUNDS = {"gray": (128, 128, 128), "black": (20, 20, 20), "white": (235, 235, 235)}
COLOURS = {
    "red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (235, 215, 40),
    "green": (50, 170, 70), "blue": (50, 90, 220), "purple": (150, 60, 190),
    "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
PLURALS = {s: s + ("es" if s == "cross" else "s") for s in SHAPES}
SIZES = {"small": (10, 14), "large": (22, 28)}
POSITIONS = ["top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right"]
RELATIONS = ["left of", "right of", "above", "below"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATION_MIN_PX = 12  # WORLD.md: a relation is only stated when centres differ this much

# Held-out colour-shape combinations: training scenes never contain them, so benchmarks
# can report compositional generalisation. One per shape, each colour used at most once.
HELDOUT_PAIRS = frozenset({
    ("red", "star"), ("blue", "triangle"), ("green", "diamond"),
    ("yellow", "cross"), ("purple", "circle"), ("orange", "square"),
})
ATTRIBUTES = {"colour": list(COLOURS), "shape": SHAPES, "size": list(SIZES),
              "position": POSITIONS, "background": list(BACKGROUNDS)}


# ----------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    size: str
    cx: float        # centre, pixels in [0, 64)
    cy: float
    extent: float    # bounding-box side in pixels
    angle: float     # rotation in degrees (|angle| <= 10)

    @property
    def position(self) -> str:
        col = min(int(self.cx * 3 // CANVAS), 2)
        row = min(int(self.cy * 3 // CANVAS), 2)
        return POSITIONS[row * 3 + col]


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]

    def to_dict(self) -> dict:
        return {"background": self.background,
                "objects": [o.__dict__ | {"position": o.position} for o in self.objects]}


def split_allows(colour: str, shape: str, split: str) -> bool:
    """'train' excludes held-out pairs, 'heldout' requires them, 'any' allows all."""
    held = (colour, shape) in HELDOUT_PAIRS
    return {"train": not held, "heldout": held, "any": True}[split]


def sample_object_kind(rng: random.Random, background: str, split: str) -> tuple[str, str]:
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if colour != background and split_allows(colour, shape, split):
            return colour, shape


def fits(cx, cy, r, placed) -> bool:
    # objects never overlap: keep bounding circles apart (extent/2 * sqrt2 covers rotation)
    return all(math.hypot(cx - o.cx, cy - o.cy) > r + o.extent * 0.72 + 1 for o in placed)


def sample_scene(rng: random.Random, n_objects: int | None = None, split: str = "train",
                 kinds: list[tuple[str, str]] | None = None, background: str | None = None,
                 sizes: list[str] | None = None) -> Scene:
    """Sample a scene. `split` controls held-out colour-shape pairs ('heldout' makes every
    object a held-out pair). `kinds`/`sizes`/`background` pin parts of the scene."""
    n = n_objects or (len(kinds) if kinds else rng.choice([1, 1, 2, 2, 3, 4]))
    for _attempt in range(100):
        bg = background or rng.choice(list(BACKGROUNDS))
        objs: list[Obj] = []
        for i in range(n):
            colour, shape = kinds[i] if kinds else sample_object_kind(rng, bg, split)
            size = sizes[i] if sizes else rng.choice(list(SIZES))
            lo, hi = SIZES[size]
            extent = rng.uniform(lo, hi)
            r = extent * 0.72
            for _ in range(200):
                cx, cy = rng.uniform(r, CANVAS - r), rng.uniform(r, CANVAS - r)
                if fits(cx, cy, r, objs):
                    objs.append(Obj(colour, shape, size, cx, cy, extent, rng.uniform(-10, 10)))
                    break
        if len(objs) == n:
            return Scene(bg, tuple(objs))
    raise RuntimeError(f"could not place {n} objects")


# ----------------------------------------------------------------------------- rendering
@dataclass
class RenderStyle:
    """Per-image rendering variation, so models don't overfit one renderer's pixels."""
    supersample: int = 4          # 1 = hard aliased edges
    colour_jitter: int = 12       # WORLD.md allows +-12 per channel
    star_inner: float = 0.42      # inner/outer radius of the star
    triangle_height: float = 0.9  # height / base
    cross_arm: float = 1 / 3      # arm width / size
    noise: float = 0.0            # std of gaussian pixel noise

    @staticmethod
    def random(rng: random.Random) -> "RenderStyle":
        return RenderStyle(supersample=rng.choice([1, 2, 4, 4]), colour_jitter=12,
                           star_inner=rng.uniform(0.36, 0.5), triangle_height=rng.uniform(0.8, 1.0),
                           cross_arm=rng.uniform(0.27, 0.4), noise=rng.choice([0, 0, 0, 2, 4]))


def _jitter(rgb, rng, amount):
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in rgb)


def _rotate(points, cx, cy, angle_deg):
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca) for x, y in points]


def shape_polygon(shape: str, cx: float, cy: float, s: float, angle: float, style: RenderStyle):
    """Polygon (list of (x, y)) for every shape but the circle; s = bounding-box side."""
    h = s / 2
    if shape == "square":
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    elif shape == "diamond":
        pts = [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    elif shape == "triangle":
        th = s * style.triangle_height
        pts = [(cx, cy - th / 2), (cx + h, cy + th / 2), (cx - h, cy + th / 2)]
    elif shape == "star":
        pts = []
        for k in range(10):
            r = h if k % 2 == 0 else h * style.star_inner
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a) + h * 0.1))
    elif shape == "cross":
        w = s * style.cross_arm / 2
        pts = [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy - w), (cx + h, cy - w),
               (cx + h, cy + w), (cx + w, cy + w), (cx + w, cy + h), (cx - w, cy + h),
               (cx - w, cy + w), (cx - h, cy + w), (cx - h, cy - w), (cx - w, cy - w)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return _rotate(pts, cx, cy, angle)


def _draw_object(draw: ImageDraw.ImageDraw, o: Obj, k: float, fill, style: RenderStyle) -> None:
    cx, cy, s = o.cx * k, o.cy * k, o.extent * k
    if o.shape == "circle":
        draw.ellipse([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill)
    else:
        draw.polygon(shape_polygon(o.shape, cx, cy, s, o.angle, style), fill=fill)


def silhouette(o: Obj, size: int = CANVAS, supersample: int = 4) -> np.ndarray:
    """The share of each cell of a size x size grid over the canvas that the object covers -> (size, size)
    float32 in [0, 1], drawn as `render` draws it with the default style."""
    k = size * supersample / CANVAS
    img = Image.new("L", (size * supersample, size * supersample), 0)
    _draw_object(ImageDraw.Draw(img), o, k, 255, RenderStyle())
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32) / 255


def render(scene: Scene, rng: random.Random | None = None, style: RenderStyle | None = None) -> Image.Image:
    """Draw a scene as a 64x64 RGB image. With rng, colours jitter; style=None uses defaults."""
    style = style or RenderStyle()
    k = style.supersample
    jit = (lambda c: _jitter(c, rng, style.colour_jitter)) if rng else (lambda c: c)
    img = Image.new("RGB", (CANVAS * k, CANVAS * k), jit(BACKGROUNDS[scene.background]))
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw_object(draw, o, k, jit(COLOURS[o.colour]), style)
    if k > 1:
        img = img.resize((CANVAS, CANVAS), Image.Resampling.BOX)
    if style.noise and rng:
        arr = np.asarray(img, dtype=np.float32)
        arr += np.random.default_rng(rng.getrandbits(32)).normal(0, style.noise, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


# ----------------------------------------------------------------------------- descriptions
@dataclass(frozen=True)
class Phrase:
    """What a caption says about one object (None = not stated)."""
    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    def matches(self, o: Obj) -> bool:
        return (self.shape == o.shape and self.colour in (None, o.colour)
                and self.size in (None, o.size) and self.position in (None, o.position))


@dataclass(frozen=True)
class Description:
    """A caption's content. Forms: one phrase per object ('listing'); two phrases joined by
    a relation; or `count` objects all matching the single phrase."""
    phrases: tuple[Phrase, ...]
    relation: str | None = None
    count: int | None = None
    background: str | None = None


def relation_holds(rel: str, a: Obj, b: Obj) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy  # y grows downwards
    return {"left of": dx >= RELATION_MIN_PX, "right of": -dx >= RELATION_MIN_PX,
            "above": dy >= RELATION_MIN_PX, "below": -dy >= RELATION_MIN_PX}[rel]


def is_true(d: Description, scene: Scene) -> bool:
    """Does the description state only true things, naming every object of the scene?"""
    if d.background not in (None, scene.background):
        return False
    objs = scene.objects
    if d.count is not None:
        return len(objs) == d.count and all(d.phrases[0].matches(o) for o in objs)
    if len(d.phrases) != len(objs):
        return False
    for perm in itertools.permutations(objs):
        if all(p.matches(o) for p, o in zip(d.phrases, perm)):
            if d.relation is None or relation_holds(d.relation, perm[0], perm[1]):
                return True
    return False


def _phrase_for(o: Obj, rng: random.Random, p_colour=0.9, p_size=0.5, p_position=0.5) -> Phrase:
    return Phrase(o.shape,
                  colour=o.colour if rng.random() < p_colour else None,
                  size=o.size if rng.random() < p_size else None,
                  position=o.position if rng.random() < p_position else None)


def describe(scene: Scene, rng: random.Random, must_state: set[str] = frozenset()) -> Description:
    """A random true description of the scene. `must_state` forces attributes to be stated
    (e.g. {'position'}), which hard-negative pairs need."""
    f = lambda a, p: 1.0 if a in must_state else p  # noqa: E731
    bg = scene.background if rng.random() < f("background", 0.5) else None
    objs = list(scene.objects)
    if len(objs) == 1:
        ph = _phrase_for(objs[0], rng, f("colour", 0.92), f("size", 0.6), f("position", 0.6))
        return Description((ph,), background=bg)
    same_shape = len({o.shape for o in objs}) == 1
    if same_shape and not must_state and rng.random() < 0.5:
        colours, sizes = {o.colour for o in objs}, {o.size for o in objs}
        ph = Phrase(objs[0].shape,
                    colour=objs[0].colour if len(colours) == 1 and rng.random() < 0.7 else None,
                    size=objs[0].size if len(sizes) == 1 and rng.random() < 0.5 else None)
        return Description((ph,), count=len(objs), background=bg)
    if len(objs) == 2:
        rels = [r for r in RELATIONS if relation_holds(r, objs[0], objs[1])]
        if rels and "position" not in must_state and ("relation" in must_state or rng.random() < 0.6):
            ph = tuple(_phrase_for(o, rng, f("colour", 0.92), f("size", 0.3), 0.0) for o in objs)
            return Description(ph, relation=rng.choice(rels), background=bg)
    rng.shuffle(objs)
    ph = tuple(_phrase_for(o, rng, f("colour", 0.92), f("size", 0.4), f("position", 0.25)) for o in objs)
    return Description(ph, background=bg)


# ----------------------------------------------------------------------------- text
POSITION_FORMS = ["in the {}", "in the {}", "at the {}"]
BACKGROUND_FORMS = ["on a {} background", "on a {} background", "with a {} background"]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase_text(p: Phrase, rng: random.Random | None = None, plural_count: int | None = None) -> str:
    words = [w for w in (p.size, p.colour) if w]
    if rng and p.size and p.colour and rng.random() < 0.15:
        words = [p.colour, p.size]  # "a red small circle" is still true, if less usual
    noun = PLURALS[p.shape] if plural_count and plural_count > 1 else p.shape   # "one red circle"
    head = " ".join(words + [noun])
    if plural_count:
        text = f"{COUNT_WORDS[plural_count]} {head}"
    else:
        det = "one" if rng and rng.random() < 0.03 else article(head)
        text = f"{det} {head}"
    if p.position:
        form = rng.choice(POSITION_FORMS) if rng else POSITION_FORMS[0]
        text += " " + form.format(p.position)
    return text


def caption_text(d: Description, rng: random.Random | None = None) -> str:
    """Render a description as plain lower-case English. rng varies the phrasing."""
    if d.count:
        text = phrase_text(d.phrases[0], rng, plural_count=d.count)
    elif d.relation:
        text = f"{phrase_text(d.phrases[0], rng)} {d.relation} {phrase_text(d.phrases[1], rng)}"
    else:
        parts = [phrase_text(p, rng) for p in d.phrases]
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if d.background:
        form = rng.choice(BACKGROUND_FORMS) if rng else BACKGROUND_FORMS[0]
        text += " " + form.format(d.background)
    return text


# ----------------------------------------------------------------------------- hard negatives
def negatives(d: Description, scene: Scene, rng: random.Random, n: int = 1,
              swaps: tuple[str, ...] = ("colour", "shape")) -> list[Description]:
    """Descriptions that differ from `d` in one stated fact and are false of the scene:
    another value of a stated attribute, two objects' `swaps` attributes traded (binding),
    a reversed relation, or a different count."""
    cands: list[Description] = []
    if d.background:
        cands += [replace(d, background=b) for b in BACKGROUNDS if b != d.background]
    for i, p in enumerate(d.phrases):
        for attr in ("colour", "shape", "size", "position"):
            value = getattr(p, attr)
            if value is None:
                continue
            for other in ATTRIBUTES[attr]:
                if other != value:
                    ph = list(d.phrases)
                    ph[i] = replace(p, **{attr: other})
                    cands.append(replace(d, phrases=tuple(ph)))
    if len(d.phrases) >= 2:
        for i, j in itertools.combinations(range(len(d.phrases)), 2):
            for attr in swaps:
                a, b = getattr(d.phrases[i], attr), getattr(d.phrases[j], attr)
                if a and b and a != b:
                    ph = list(d.phrases)
                    ph[i], ph[j] = replace(ph[i], **{attr: b}), replace(ph[j], **{attr: a})
                    cands.append(replace(d, phrases=tuple(ph)))
    if d.relation:
        flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        cands.append(replace(d, relation=flip[d.relation]))
    if d.count:
        cands += [replace(d, count=c) for c in (2, 3, 4) if c != d.count]
    rng.shuffle(cands)
    out = []
    for c in cands:
        if not is_true(c, scene):
            out.append(c)
            if len(out) == n:
                break
    return out


def edited_scene(scene: Scene, rng: random.Random, split: str = "train",
                 choice: str | None = None) -> tuple[Scene, str] | None:
    """A partner scene that differs in one attribute (for in-batch hard negatives), and the
    attribute changed. `choice` forces the edit ("swap": two objects trade colours; "size_swap": a large and
    a small object trade sizes, each kept at its centre). Returns None if the edit could not be made."""
    objs = list(scene.objects)
    i = rng.randrange(len(objs))
    o = objs[i]
    choice = choice or rng.choice(["colour", "shape", "size", "position", "background", "swap"]
                                  if len(objs) > 1 else ["colour", "shape", "size", "position", "background"])
    if choice in ("swap", "size_swap") and len(objs) < 2:
        return None
    if choice == "size_swap":
        others = [k for k in range(len(objs)) if objs[k].size != o.size]
        if not others:
            return None
        j = rng.choice(others)
        a, b = objs[i], objs[j]
        objs[i] = replace(a, size=b.size, extent=rng.uniform(*SIZES[b.size]))
        objs[j] = replace(b, size=a.size, extent=rng.uniform(*SIZES[a.size]))
        for k in (i, j):   # a grown object is moved inside the canvas, then must not touch the rest
            r = objs[k].extent * 0.72
            objs[k] = replace(objs[k], cx=min(max(objs[k].cx, r), CANVAS - r), cy=min(max(objs[k].cy, r), CANVAS - r))
        kept_apart = all(fits(objs[k].cx, objs[k].cy, objs[k].extent * 0.72, objs[:k] + objs[k + 1:]) for k in (i, j))
        return (Scene(scene.background, tuple(objs)), "size") if kept_apart else None
    if choice == "background":
        bgs = [b for b in BACKGROUNDS if b != scene.background and all(x.colour != b for x in objs)]
        return (Scene(rng.choice(bgs), scene.objects), "background") if bgs else None
    if choice == "swap":
        j = rng.choice([k for k in range(len(objs)) if k != i])
        if objs[i].colour == objs[j].colour:
            return None
        a, b = objs[i], objs[j]
        if not (split_allows(b.colour, a.shape, split) and split_allows(a.colour, b.shape, split)):
            return None
        objs[i], objs[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
        return Scene(scene.background, tuple(objs)), "colour"
    if choice == "colour":
        opts = [c for c in COLOURS if c not in (o.colour, scene.background) and split_allows(c, o.shape, split)]
        objs[i] = replace(o, colour=rng.choice(opts))
    elif choice == "shape":
        opts = [s for s in SHAPES if s != o.shape and split_allows(o.colour, s, split)]
        objs[i] = replace(o, shape=rng.choice(opts))
    elif choice == "size":
        size = "small" if o.size == "large" else "large"
        extent = rng.uniform(*SIZES[size])
        r = extent * 0.72
        cx, cy = min(max(o.cx, r), CANVAS - r), min(max(o.cy, r), CANVAS - r)
        if not fits(cx, cy, r, objs[:i] + objs[i + 1:]):
            return None
        objs[i] = replace(o, size=size, extent=extent, cx=cx, cy=cy)
    elif choice == "position":
        r = o.extent * 0.72
        others = objs[:i] + objs[i + 1:]
        for _ in range(50):
            cx, cy = rng.uniform(r, CANVAS - r), rng.uniform(r, CANVAS - r)
            if fits(cx, cy, r, others) and replace(o, cx=cx, cy=cy).position != o.position:
                objs[i] = replace(o, cx=cx, cy=cy)
                break
        else:
            return None
    return Scene(scene.background, tuple(objs)), choice


# ----------------------------------------------------------------------------- examples
@dataclass
class Example:
    image: Image.Image
    caption: str
    scene: Scene
    description: Description = field(repr=False)


def example(seed: int, split: str = "train", n_objects: int | None = None,
            robust_style: bool = True) -> Example:
    """The example for a seed: the same seed always gives the same image and caption."""
    rng = random.Random(seed)
    scene = sample_scene(rng, n_objects=n_objects, split=split)
    style = RenderStyle.random(rng) if robust_style else RenderStyle()
    d = describe(scene, rng)
    return Example(render(scene, rng, style), caption_text(d, rng), scene, d)
