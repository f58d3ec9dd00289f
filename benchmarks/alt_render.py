"""An independent ShapesWorld renderer, written from WORLD.md alone (not from world.render), so
benchmarks can show how models do on pixels they were not trained on.

Differences from clipgpt_core.world.render: shapes are implicit functions evaluated at pixel
centres (3x3 sub-samples, or 1 for hard edges) instead of PIL polygons; the triangle fills its
bounding box (height = base); the star uses the regular pentagram's inner radius (0.382); no noise;
colours are WORLD.md's RGB values with uniform +-12 jitter.
"""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from clipgpt_core import world


def _inside(shape: str, x: np.ndarray, y: np.ndarray, h: float) -> np.ndarray:
    """x, y: pixel offsets from the centre in the object's (unrotated) frame; h = half extent."""
    if shape == "circle":
        return x * x + y * y <= h * h
    if shape == "square":
        return (abs(x) <= h) & (abs(y) <= h)
    if shape == "diamond":
        return abs(x) + abs(y) <= h
    if shape == "triangle":                      # apex (0, -h), base y = +h, |x| <= h at the base
        return (y <= h) & (abs(x) <= (y + h) / 2)
    if shape == "cross":
        arm = h / 3
        return ((abs(x) <= arm) & (abs(y) <= h)) | ((abs(y) <= arm) & (abs(x) <= h))
    if shape == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, h, h * 0.382)
        px, py = radii * np.cos(angles), radii * np.sin(angles) + 0.1 * h
        inside = np.zeros_like(x, dtype=bool)
        for i in range(10):                      # even-odd rule
            x0, y0, x1, y1 = px[i], py[i], px[i - 1], py[i - 1]
            crosses = (y0 > y) != (y1 > y)
            inside ^= crosses & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
        return inside
    raise ValueError(shape)


def render(scene: world.Scene, rng: random.Random, antialias: bool = True) -> Image.Image:
    n = 3 if antialias else 1
    sub = (np.arange(n) + 0.5) / n
    ys, xs = np.meshgrid(np.arange(world.CANVAS), np.arange(world.CANVAS), indexing="ij")
    jitter = lambda rgb: np.clip(np.array(rgb) + [rng.randint(-12, 12) for _ in range(3)], 0, 255)  # noqa: E731
    img = np.ones((world.CANVAS, world.CANVAS, 3)) * jitter(world.BACKGROUNDS[scene.background])
    for o in scene.objects:
        cover = np.zeros(xs.shape)
        a = math.radians(-o.angle)
        for dy in sub:
            for dx in sub:
                x, y = xs + dx - o.cx, ys + dy - o.cy
                xr, yr = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
                cover += _inside(o.shape, xr, yr, o.extent / 2)
        cover = (cover / (n * n))[..., None]
        img = img * (1 - cover) + cover * jitter(world.COLOURS[o.colour])
    return Image.fromarray(img.round().astype(np.uint8))


def redraw(scenes: list[world.Scene], seed: int = 0) -> list[Image.Image]:
    """Scenes redrawn by this renderer, 3 in 4 anti-aliased, reproducibly from `seed`
    (what clipgpt_core.explainers.targets.world_sample takes as its renderer)."""
    rng = random.Random(seed)
    return [render(s, rng, antialias=rng.random() < 0.75) for s in scenes]
