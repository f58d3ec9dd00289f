"""Zero-shot classification of ShapesWorld attributes with CLIP (seed 004).

One prompt template per attribute; the candidates vary that attribute and keep the rest.
The benchmark fills the other slots with the true values; the app's panel fills them with
its own best guess (colour and shape jointly first, then the rest)."""
from __future__ import annotations

import numpy as np

from . import scenes as world   # the spec: world.COLOURS, world.render, ...

TEMPLATES = {
    "colour": "a {colour} {shape}",
    "shape": "a {colour} {shape}",
    "size": "a {size} {colour} {shape}",
    "position": "a {colour} {shape} in the {position}",
    "background": "a {colour} {shape} on a {background} background",
}


def prompts(attribute: str, known: dict) -> list[str]:
    """Candidate captions for `attribute`, other slots filled from `known`."""
    return [TEMPLATES[attribute].format(**(known | {attribute: v})) for v in world.ATTRIBUTES[attribute]]


def softmax(x: np.ndarray, scale: float) -> np.ndarray:
    z = scale * (x - x.max(axis=-1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classify(clip, image_embs: np.ndarray, attribute: str, knowns: list[dict]) -> list[str]:
    """Benchmark protocol: for each image (embedding) and its known other attributes, the
    argmax over candidate captions that vary `attribute`."""
    values = world.ATTRIBUTES[attribute]
    cache: dict[tuple, np.ndarray] = {}
    out = []
    for emb, known in zip(image_embs, knowns):
        key = tuple(sorted(known.items()))
        if key not in cache:
            cache[key] = clip.encode_texts(prompts(attribute, known))
        out.append(values[int(np.argmax(cache[key] @ emb))])
    return out


def panel(clip, image_emb: np.ndarray) -> dict[str, dict[str, float]]:
    """For one image embedding (D,): per attribute, a probability for each value (for gr.Label).
    Colour and shape are read jointly from "a {colour} {shape}", then size, position and
    background are asked about the most likely coloured shape."""
    pairs = [(c, s) for c in world.COLOURS for s in world.SHAPES]
    sims = clip.encode_texts([f"a {c} {s}" for c, s in pairs]) @ image_emb
    p = softmax(sims, clip.logit_scale)
    result = {
        "colour": {c: float(sum(pi for (ci, _), pi in zip(pairs, p) if ci == c)) for c in world.COLOURS},
        "shape": {s: float(sum(pi for (_, si), pi in zip(pairs, p) if si == s)) for s in world.SHAPES},
    }
    colour, shape = pairs[int(np.argmax(p))]
    known = {"colour": colour, "shape": shape}
    for attribute in ("size", "position", "background"):
        texts = prompts(attribute, known)
        probs = softmax(clip.encode_texts(texts) @ image_emb, clip.logit_scale)
        result[attribute] = dict(zip(world.ATTRIBUTES[attribute], map(float, probs)))
    return result
