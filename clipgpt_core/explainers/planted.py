"""Planted functions with known answers, for measuring Explain: f(image) from a ShapesWorld scene's ground
truth (or from pixels). `PLANTED["has_red"].score(scenes, images)`; `.answer` holds the attribute values a right
explanation states ({"colour": "red"}), checked with world.captions.states_answer(text, answer).

    images, scenes = world_sample(256)
    f = PLANTED["number_of_circles"].score(scenes, images)
"""
from __future__ import annotations

from collections.abc import Callable
import random
from dataclasses import dataclass, replace

import numpy as np

from .. import world
from ..images import load_image
from .errors import TargetError

TOP_ROW = ("top left", "top", "top right")
BOTTOM_ROW = ("bottom left", "bottom", "bottom right")


@dataclass(frozen=True)
class Planted:
    """A function of images with a known answer: the attribute values a right explanation states.
    An answer value may be a tuple of acceptable values ({"position": TOP_ROW})."""
    name: str
    description: str
    fn: Callable                       # (scene | None, image | None) -> float
    answer: dict
    needs_scene: bool = True           # False: computed from pixels alone (works on the user's images)
    draw: Callable | None = None       # rng -> Scene: the scenes to measure it on, where random world scenes
                                       # would leave it almost always 0 (world_sample(..., draw=))

    def score(self, scenes=None, images=None) -> np.ndarray:
        if self.needs_scene:
            if scenes is None:
                raise TargetError(f"“{self.description}” is computed from ShapesWorld ground truth; use the "
                                  f"built-in gallery sample (or pick a pixel-based function for your own images)")
            return np.array([self.fn(s, None) for s in scenes], dtype=np.float64)
        if images is None:
            raise TargetError(f"“{self.description}” needs the images")
        return np.array([self.fn(None, load_image(im)) for im in images], dtype=np.float64)

    @property
    def single_attribute(self) -> bool:
        return len(self.answer) == 1


def _count(pred) -> Callable:
    return lambda scene, _im: float(sum(1 for o in scene.objects if pred(o)))


def _any(pred) -> Callable:
    return lambda scene, _im: float(any(pred(o) for o in scene.objects))


def _area(pred) -> Callable:
    """Total object area in pixels (extent^2: a proxy the same for every shape)."""
    return lambda scene, _im: float(sum(o.extent ** 2 for o in scene.objects if pred(o)))


def _pixel_fraction(colour: str, tol: int = 40) -> Callable:
    """Share of pixels within `tol` (per channel) of a colour's RGB: pixels only, no scene needed."""
    rgb = np.array(world.COLOURS[colour], dtype=np.int16)

    def fn(_scene, image):
        a = np.asarray(image.convert("RGB"), dtype=np.int16)
        return float((np.abs(a - rgb).max(-1) <= tol).mean())
    return fn


def _related(relation: str, first, second) -> Callable:
    """1 when some object matching `first` stands in `relation` to another matching `second` (world.relation_holds:
    centres at least RELATION_MIN_PX apart), else 0."""
    return lambda scene, _im: float(any(first(a) and second(b) and world.relation_holds(relation, a, b)
                                        for a in scene.objects for b in scene.objects if a is not b))


def _with_pair(attr: str, x: str, y: str) -> Callable:
    """rng -> a world scene of 2-3 objects, one with attr x and another with attr y, anywhere: the relation
    between them holds or not by chance (a third of the time or so)."""
    def draw(rng: random.Random) -> world.Scene:
        while True:
            scene = world.sample_scene(rng, n_objects=rng.choice([2, 2, 3]), split="any")
            if attr == "colour" and scene.background in (x, y):
                continue
            objs = list(scene.objects)
            objs[0], objs[1] = replace(objs[0], **{attr: x}), replace(objs[1], **{attr: y})
            return world.Scene(scene.background, tuple(objs))
    return draw


def _background(name: str) -> Callable:
    return lambda scene, _im: float(scene.background == name)


def _planted() -> dict[str, Planted]:
    p: list[Planted] = []
    for c in ("red", "blue", "green", "yellow", "purple", "orange"):
        p.append(Planted(f"has_{c}", f"has a {c} object", _any(lambda o, c=c: o.colour == c), {"colour": c}))
    for c in ("red", "blue"):
        p.append(Planted(f"area_of_{c}", f"area of {c} (share of {c} pixels)", _pixel_fraction(c), {"colour": c},
                         needs_scene=False))
    p.append(Planted("area_of_green", "area of green objects", _area(lambda o: o.colour == "green"),
                     {"colour": "green"}))
    p.append(Planted("number_of_circles", "number of circles", _count(lambda o: o.shape == "circle"),
                     {"shape": "circle"}))
    for s in ("star", "triangle", "square", "cross", "diamond"):
        p.append(Planted(f"has_{s}", f"has a {s}", _any(lambda o, s=s: o.shape == s), {"shape": s}))
    p.append(Planted("large_objects", "number of large objects", _count(lambda o: o.size == "large"),
                     {"size": "large"}))
    p.append(Planted("small_objects", "number of small objects", _count(lambda o: o.size == "small"),
                     {"size": "small"}))
    for pos in ("top left", "center", "bottom right"):
        p.append(Planted(f"object_{pos.replace(' ', '_')}", f"an object in the {pos}",
                         _any(lambda o, pos=pos: o.position == pos), {"position": pos}))
    p.append(Planted("object_top_row", "an object in the top row", _any(lambda o: o.position in TOP_ROW),
                     {"position": TOP_ROW}))
    for bg in world.BACKGROUNDS:
        p.append(Planted(f"{bg}_background", f"{bg} background", _background(bg), {"background": bg}))
    # two attributes
    p.append(Planted("red_star", "a red star (a held-out pair)", _any(lambda o: (o.colour, o.shape) == ("red", "star")),
                     {"colour": "red", "shape": "star"}))
    p.append(Planted("star_top_half", "a star in the top half", _any(lambda o: o.shape == "star" and o.cy < 32),
                     {"shape": "star", "position": TOP_ROW + ("left", "center", "right")}))
    p.append(Planted("large_blue", "a large blue object", _any(lambda o: o.colour == "blue" and o.size == "large"),
                     {"colour": "blue", "size": "large"}))
    p.append(Planted("green_circle", "a green circle", _any(lambda o: (o.colour, o.shape) == ("green", "circle")),
                     {"colour": "green", "shape": "circle"}))
    p.append(Planted("circle_on_black", "a circle on a black background",
                     lambda s, _im: float(s.background == "black" and any(o.shape == "circle" for o in s.objects)),
                     {"shape": "circle", "background": "black"}))
    # relations: which object is where, relative to another (a function "red and blue" reads only half of)
    for (x, rel, y), attr in ((("red", "left of", "blue"), "colour"), (("green", "right of", "yellow"), "colour"),
                              (("circle", "above", "square"), "shape")):
        canonical = f"{x} {rel} {y}" if rel in ("left of", "above") else \
            f"{y} {'left of' if rel == 'right of' else 'above'} {x}"
        p.append(Planted(f"{x}_{rel.replace(' ', '_')}_{y}", f"a {x} object {rel} a {y} one",
                         _related(rel, lambda o, x=x, a=attr: getattr(o, a) == x,
                                  lambda o, y=y, a=attr: getattr(o, a) == y),
                         {"relation": canonical, attr: (x, y)}, draw=_with_pair(attr, x, y)))
    return {x.name: x for x in p}


PLANTED = _planted()


def world_sample(n: int, seed: int = 0, renderer="ours", draw: Callable | None = None):
    """n ShapesWorld images (seeds seed..seed+n-1, all colour-shape pairs: the built-in gallery's first
    n when seed=0) and their scenes. renderer: "ours" (world.render), or a function (scenes, seed) ->
    images that redraws them, such as the benchmarks' independent renderer (benchmarks.alt_render.redraw):
    the core never imports benchmark code. draw: rng -> Scene instead of the world's own scenes (a Planted's
    draw), one rng per seed."""
    if draw is not None:
        scenes = [draw(random.Random(seed + i)) for i in range(n)]
        if renderer == "ours":
            rngs = [random.Random(-(seed + i)) for i in range(n)]
            return [world.render(sc, r, world.RenderStyle.random(r)) for sc, r in zip(scenes, rngs)], scenes
        return _redrawn(renderer, scenes, seed), scenes
    exs = [world.example(seed + i, split="any") for i in range(n)]
    scenes = [e.scene for e in exs]
    if renderer == "ours":
        return [e.image for e in exs], scenes
    return _redrawn(renderer, scenes, seed), scenes


def _redrawn(renderer, scenes, seed: int):
    if not callable(renderer):
        raise TargetError(f"renderer must be 'ours' or a function (scenes, seed) -> images, got {renderer!r} "
                          f"(for the independent renderer pass benchmarks.alt_render.redraw)")
    return renderer(scenes, seed)
