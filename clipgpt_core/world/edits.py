"""Edits in the world's language: "make the red star blue", "remove the green cross", ... (docs/world.md).

An `Edit` is structured, like a Description: `apply_edit(scene, edit)` makes the edited scene exactly, so
edit data is exact (CLIP-GPT trains on it) and a written edit is judged by what it does, not by its wording
(`same_content(apply_edit(a, written), b)`). Five forms, the first wording of each is the canonical one:

    recolour    make the {colour} {shape} {colour}            (turn the ... {colour})
    replace     replace the {colour} {shape} with a {colour} {shape}   (change the ... into a ...)
    remove      remove the {colour} {shape}                    (delete the ...)
    add         add a {size} {colour} {shape} in the {position}   (put a ... in the / at the ...)
    background  change the background to {background}          (make the background {background})

An object is named by its colour and shape; an edit is only made of an object that is the one of its kind
in its scene, so the name is never ambiguous.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from . import scenes as world
from .captions import alternatives, form_words, normalise

KINDS = ("recolour", "replace", "remove", "add", "background")
DIFF_QUESTION = "what changed?"      # the question CLIP-GPT answers with an edit after two images


@dataclass(frozen=True)
class Edit:
    kind: str
    target: tuple[str, str] | None = None    # (colour, shape) of the object edited (None: add, background)
    colour: str | None = None                # recolour / replace / add: the new object's colour
    shape: str | None = None                 # replace / add
    size: str | None = None                  # add
    position: str | None = None              # add
    background: str | None = None            # background


_FORMS = {
    "recolour": ["make the {t} {colour}", "turn the {t} {colour}"],
    "replace": ["replace the {t} with {a} {colour} {shape}", "change the {t} into {a} {colour} {shape}"],
    "remove": ["remove the {t}", "delete the {t}"],
    "add": ["add {a} {size} {colour} {shape} in the {position}", "put {a} {size} {colour} {shape} in the {position}",
            "add {a} {size} {colour} {shape} at the {position}"],
    "background": ["change the background to {background}", "make the background {background}"],
}


def edit_words() -> set[str]:
    """Every word an edit in any accepted wording, or the difference question, can write beside the objects'."""
    words = form_words(DIFF_QUESTION) | {"a", "an"}
    for form in (f for forms in _FORMS.values() for f in forms):
        words |= form_words(form)
    return words


def edit_text(e: Edit, rng: random.Random | None = None) -> str:
    """The edit in words: the canonical wording without rng, one of the accepted wordings with it."""
    forms = _FORMS[e.kind]
    form = rng.choice(forms) if rng else forms[0]
    first = e.size if e.kind == "add" else e.colour
    return form.format(t=" ".join(e.target) if e.target else "", colour=e.colour, shape=e.shape, size=e.size,
                       position=e.position, background=e.background, a=world.article(first) if first else "a")


_C, _S = alternatives(world.COLOURS), alternatives(world.SHAPES)
_T = rf"(?:the )?({_C}) ({_S})"
_OBJ = rf"(?:a|an) ({_C}) ({_S})"
_PATTERNS = [
    ("recolour", re.compile(rf"(?:make|turn) {_T} ({_C})")),
    ("replace", re.compile(rf"(?:replace {_T} with|change {_T} into) {_OBJ}")),
    ("remove", re.compile(rf"(?:remove|delete) {_T}")),
    ("add", re.compile(rf"(?:add|put) (?:a|an) ({alternatives(world.SIZES)}) ({_C}) ({_S}) "
                       rf"(?:in|at) the ({alternatives(world.POSITIONS)})(?: corner)?")),
    ("background", re.compile(rf"(?:change the background to|make the background) ({alternatives(world.BACKGROUNDS)})")),
]


def is_no_op(e: Edit, background: str | None = None) -> bool:
    """An edit that changes nothing: an object made its own colour or replaced by its like, or the background
    changed to `background`, the one the scene has (None: unknown)."""
    if e.kind == "recolour":
        return e.target is not None and e.colour == e.target[0]
    if e.kind == "replace":
        return e.target == (e.colour, e.shape)
    return e.kind == "background" and background is not None and e.background == background


def parse_edit(text: str) -> Edit | None:
    """The Edit a text states in one of the accepted wordings (after the caption language's normalising), or None."""
    if not isinstance(text, str):
        return None
    s = normalise(text)
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(s)
        if not m:
            continue
        g = [x for x in m.groups() if x is not None]      # replace's two alternatives fill different groups
        if kind == "recolour":
            return Edit(kind, (g[0], g[1]), colour=g[2]) if g[2] != g[0] else None
        if kind == "replace":
            if g[3] == g[1]:     # the same shape: it is a recolour
                return Edit("recolour", (g[0], g[1]), colour=g[2]) if g[2] != g[0] else None
            return Edit(kind, (g[0], g[1]), colour=g[2], shape=g[3])
        if kind == "remove":
            return Edit(kind, (g[0], g[1]))
        if kind == "add":
            return Edit(kind, colour=g[1], shape=g[2], size=g[0], position=g[3])
        return Edit(kind, background=g[0])
    return None


def _find(scene: world.Scene, target) -> int | None:
    hits = [i for i, o in enumerate(scene.objects) if (o.colour, o.shape) == tuple(target)]
    return hits[0] if len(hits) == 1 else None


def _cell_bounds(position: str) -> tuple[float, float, float, float]:
    k = world.POSITIONS.index(position)
    w = world.CANVAS / 3
    return (k % 3) * w, (k // 3) * w, (k % 3 + 1) * w, (k // 3 + 1) * w


def apply_edit(scene: world.Scene, e: Edit, rng: random.Random | None = None) -> world.Scene | None:
    """The scene the edit makes, or None when it cannot be made (no such object, or two of them; no room; a
    fifth object; the last object removed; an object the colour of its background). An added object goes
    at a random free place in its cell with rng, nearest the cell's centre without."""
    objs = list(scene.objects)
    if e.kind == "background":
        if e.background == scene.background or any(o.colour == e.background for o in objs):
            return None
        return world.Scene(e.background, scene.objects)
    if e.kind == "add":
        if len(objs) >= 4 or e.colour == scene.background:
            return None
        extent = sum(world.SIZES[e.size]) / 2 if rng is None else rng.uniform(*world.SIZES[e.size])
        r = extent * 0.72
        x0, y0, x1, y1 = _cell_bounds(e.position)
        lo = lambda a: max(a, r)                  # noqa: E731  inside the canvas
        hi = lambda b: min(b, world.CANVAS - r) - 1e-3   # noqa: E731  and inside the cell (a centre on its edge is the next cell's)
        if lo(x0) > hi(x1) or lo(y0) > hi(y1):
            return None
        tries = [((lo(x0) + hi(x1)) / 2, (lo(y0) + hi(y1)) / 2)]
        g = rng or random.Random(0)
        tries += [(g.uniform(lo(x0), hi(x1)), g.uniform(lo(y0), hi(y1))) for _ in range(200)]
        if rng is not None:
            tries = tries[1:] + tries[:1]
        for cx, cy in tries:
            if world.fits(cx, cy, r, objs):
                angle = rng.uniform(-10, 10) if rng else 0.0
                return world.Scene(scene.background, tuple(objs + [world.Obj(e.colour, e.shape, e.size, cx, cy,
                                                                             extent, angle)]))
        return None
    i = _find(scene, e.target)
    if i is None:
        return None
    if e.kind == "remove":
        return world.Scene(scene.background, tuple(objs[:i] + objs[i + 1:])) if len(objs) > 1 else None
    colour, shape = e.colour, e.shape or objs[i].shape
    if colour == scene.background:
        return None
    objs[i] = replace(objs[i], colour=colour, shape=shape)
    return world.Scene(scene.background, tuple(objs))


def content(scene: world.Scene) -> tuple:
    """What the world's language can tell apart: the background and each object's colour, shape, size, cell."""
    return scene.background, tuple(sorted((o.colour, o.shape, o.size, o.position) for o in scene.objects))


def same_content(a: world.Scene, b: world.Scene) -> bool:
    return a is not None and b is not None and content(a) == content(b)


def random_edit(scene: world.Scene, rng: random.Random, split: str = "train",
                kind: str | None = None) -> tuple[Edit, world.Scene] | None:
    """A random edit that can be made of the scene and the scene it makes (held-out colour-shape pairs kept to
    `split`), or None when the chosen kind cannot be made of it."""
    kind = kind or rng.choice(KINDS)
    objs = scene.objects
    named = [o for o in objs if _find(scene, (o.colour, o.shape)) is not None]
    if kind == "background":
        e = Edit(kind, background=rng.choice([b for b in world.BACKGROUNDS if b != scene.background]))
    elif kind == "add":
        colour, shape = world.sample_object_kind(rng, scene.background, split)
        e = Edit(kind, colour=colour, shape=shape, size=rng.choice(list(world.SIZES)),
                 position=rng.choice(world.POSITIONS))
    elif not named:
        return None
    else:
        o = rng.choice(named)
        if kind == "remove":
            e = Edit(kind, (o.colour, o.shape))
        elif kind == "recolour":
            opts = [c for c in world.COLOURS if c not in (o.colour, scene.background)
                    and world.split_allows(c, o.shape, split)]
            e = Edit(kind, (o.colour, o.shape), colour=rng.choice(opts))
        else:
            colour, shape = world.sample_object_kind(rng, scene.background, split)
            if shape == o.shape:
                return None
            e = Edit(kind, (o.colour, o.shape), colour=colour, shape=shape)
    edited = apply_edit(scene, e, rng)
    return (e, edited) if edited is not None else None


def near_miss(scene: world.Scene, e: Edit, rng: random.Random) -> world.Scene | None:
    """The edit's near miss, for a gallery: the same change made to another object (recolour, replace, remove),
    the same object added in another cell, another background. None when there is none."""
    if e.kind == "background":
        others = [b for b in world.BACKGROUNDS if b not in (scene.background, e.background)]
        miss = Edit(e.kind, background=others[0]) if others else None
    elif e.kind == "add":
        miss = replace(e, position=rng.choice([p for p in world.POSITIONS if p != e.position]))
    else:
        others = [(o.colour, o.shape) for o in scene.objects if (o.colour, o.shape) != e.target]
        others = [t for t in others if _find(scene, t) is not None]
        miss = replace(e, target=rng.choice(others)) if others else None
    out = apply_edit(scene, miss, rng) if miss else None
    if out is None or same_content(out, scene) or same_content(out, apply_edit(scene, e)):
        return None          # e.g. the other object is already the new colour
    return out


def neighbours(e: Edit) -> list[Edit]:
    """The edits that differ from `e` in one field (the object named, the new colour, shape, size or cell, the
    background), each in its canonical form: where a search for the edit between two images steps."""
    options = {"colour": list(world.COLOURS), "shape": world.SHAPES, "size": list(world.SIZES),
               "position": world.POSITIONS, "background": list(world.BACKGROUNDS)}
    out = []
    for name, values in options.items():
        if getattr(e, name) is not None:
            out += [replace(e, **{name: v}) for v in values if v != getattr(e, name)]
    if e.target is not None:
        out += [replace(e, target=(c, e.target[1])) for c in world.COLOURS if c != e.target[0]]
        out += [replace(e, target=(e.target[0], s)) for s in world.SHAPES if s != e.target[1]]
        if e.kind == "recolour":                       # a new shape too: a replace
            out += [Edit("replace", e.target, colour=e.colour, shape=s) for s in world.SHAPES if s != e.target[1]]
    return list(dict.fromkeys(p for p in (parse_edit(edit_text(x)) for x in out) if p is not None and p != e))
