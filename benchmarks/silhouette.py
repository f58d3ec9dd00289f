"""An independent silhouette shape judge for ShapesWorld images (no model, no renderer code).

    judge_shape(image, background=None) -> (shape name or None, info)

1. Segmentation: the background colour is the median of the image border (or, with `background`, of the border
   pixels near that WORLD.md palette colour); pixels farther from it than a threshold set by the border's own
   noise are foreground; the largest 4-connected foreground component is the object. Its colour is the median
   of its most saturated pixels, and every pixel near it gets a coverage alpha in [0, 1] (its projection onto the
   background->object colour line), so anti-aliased edges count fractionally.
2. Descriptors of the alpha silhouette: the polar radius profile from the centroid (36 rays, each radius the
   alpha integrated along the ray, divided by sqrt(area)), convex-hull solidity, axis-aligned bounding-box fill,
   top/bottom mass around the centroid, min/max radius and the number of profile peaks.
3. Classification: nearest template in descriptor space (per shape, the closest of its templates). Templates
   are ideal shapes rasterised here from WORLD.md's words alone (own numpy point-in-polygon rasteriser):
   sizes 9.5-29 px, rotations -10.5..10.5 degrees, star inner radius 0.34-0.52 (five points, optionally raised
   by 0-0.1 of the half size), triangle height 0.78-1.02 of the base, cross arm 0.25-0.42 of the size,
   sub-pixel positions, and both area-weighted (anti-aliased) and hard-edged coverage with a varying inclusion
   threshold (so different rasterisation rules are covered).

Benchmarks only: imports clipgpt_core.world for vocabulary constants, never a project model.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from clipgpt_core import world  # vocabulary constants only

SHAPES = tuple(world.SHAPES)
N_RAYS = 36                    # radius profile samples, every 10 degrees clockwise from "up"
RAY_STEP = 0.25                # px between alpha samples along a ray
MIN_AREA = 8.0                 # px of coverage: less is "no object"
MIN_THRESHOLD = 24.0           # RGB distance: never call a pixel foreground below this
TEMPLATES_PER_SHAPE = 160
# weights of the scalar descriptors next to the 36-value profile in the distance
WEIGHTS = {"solidity": 2.0, "bbox_fill": 1.5, "top_bottom": 1.0}


# ----------------------------------------------------------------------------- ideal shapes (own rasteriser)
def ideal_polygon(shape: str, extent: float, angle: float, *, star_inner: float = 0.42, star_raise: float = 0.05,
                  triangle_height: float = 0.9, cross_arm: float = 1 / 3) -> np.ndarray | None:
    """Vertices (n, 2) as (x, y), y down, around the bounding-box centre; None for the circle."""
    h = extent / 2
    if shape == "circle":
        return None
    if shape == "square":
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "diamond":
        pts = [(0, -h), (h, 0), (0, h), (-h, 0)]
    elif shape == "triangle":                                    # apex up, base = extent
        t = extent * triangle_height / 2
        pts = [(0, -t), (h, t), (-h, t)]
    elif shape == "star":                                        # five points, first one up
        k = np.arange(10)
        r = np.where(k % 2 == 0, h, h * star_inner)
        a = -math.pi / 2 + k * math.pi / 5
        pts = list(zip(r * np.cos(a), r * np.sin(a) + star_raise * h))
    elif shape == "cross":                                       # plus sign
        w = extent * cross_arm / 2
        pts = [(-w, -h), (w, -h), (w, -w), (h, -w), (h, w), (w, w), (w, h), (-w, h),
               (-w, w), (-h, w), (-h, -w), (-w, -w)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    p = np.array(pts, dtype=np.float64)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return p @ np.array([[c, s], [-s, c]])


def _inside(poly: np.ndarray | None, radius: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if poly is None:
        return x * x + y * y <= radius * radius
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):   # even-odd crossing rule
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        inside ^= crosses & (x < x0 + (x1 - x0) * (y - y0) / (y1 - y0))
    return inside


def rasterise(shape: str, extent: float, angle: float = 0.0, *, offset=(0.0, 0.0), canvas: int = 40,
              supersample: int = 4, threshold: float | None = None, **params) -> np.ndarray:
    """Coverage (canvas, canvas) in [0, 1] of an ideal shape centred at the canvas centre + offset.
    threshold=None: area coverage (anti-aliased); else hard edges: covered iff coverage >= threshold."""
    poly = ideal_polygon(shape, extent, angle, **params)
    sub = (np.arange(supersample) + 0.5) / supersample
    grid = (np.arange(canvas)[:, None] + sub[None, :]).ravel()
    c = canvas / 2
    y, x = np.meshgrid(grid - c - offset[1], grid - c - offset[0], indexing="ij")
    cover = _inside(poly, extent / 2, x, y).astype(np.float64)
    cover = cover.reshape(canvas, supersample, canvas, supersample).mean(axis=(1, 3))
    return cover if threshold is None else (cover >= threshold).astype(np.float64)


# ----------------------------------------------------------------------------- segmentation
def border_pixels(x: np.ndarray, width: int = 2) -> np.ndarray:
    """(H, W, 3) -> (n, 3): the pixels of the image's outer `width` rows and columns."""
    return np.concatenate([x[:width].reshape(-1, 3), x[-width:].reshape(-1, 3),
                           x[:, :width].reshape(-1, 3), x[:, -width:].reshape(-1, 3)])


def segment(image: Image.Image, background: str | None = None) -> tuple[np.ndarray | None, dict]:
    """-> (alpha (H, W) of the largest foreground object, or None; info)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float64)
    border = border_pixels(x)
    if background is not None:
        ref = np.array(world.BACKGROUNDS[background], dtype=np.float64)
        near = border[np.linalg.norm(border - ref, axis=1) < 60]
        bg = np.median(near, axis=0) if len(near) >= len(border) // 4 else ref
    else:
        bg = np.median(border, axis=0)
    dist = np.linalg.norm(x - bg, axis=-1)
    noise = float(np.median(np.linalg.norm(border - bg, axis=1)))
    threshold = max(MIN_THRESHOLD, 4.0 * noise)
    info = {"background_rgb": [round(float(v), 1) for v in bg], "threshold": round(threshold, 1)}
    labels, n = ndimage.label(dist > threshold)                      # 4-connected by default
    if n == 0:
        return None, info | {"area": 0.0}
    sizes = ndimage.sum_labels(np.ones_like(dist), labels, index=np.arange(1, n + 1))
    comp = labels == (int(np.argmax(sizes)) + 1)
    info["components"] = int(n)
    # object colour: median of the component's strongest quarter; alpha = projection on the bg->object line
    d = dist[comp]
    obj = np.median(x[comp][d >= np.quantile(d, 0.75)], axis=0)
    direction = obj - bg
    alpha = np.clip((x - bg) @ direction / max(float(direction @ direction), 1e-6), 0, 1)
    region = ndimage.binary_dilation(comp, iterations=2)
    alpha = np.where(region, alpha, 0.0)
    # keep only the alpha >= 0.5 component that holds the object (plus a 1 px fringe for soft edges)
    core_labels, m = ndimage.label(alpha >= 0.5)
    if m == 0:
        return None, info | {"area": 0.0}
    core_sizes = ndimage.sum_labels(np.ones_like(alpha), core_labels, index=np.arange(1, m + 1))
    core = core_labels == (int(np.argmax(core_sizes)) + 1)
    alpha = np.where(ndimage.binary_dilation(core, iterations=1), alpha, 0.0)
    info |= {"object_rgb": [round(float(v), 1) for v in obj], "area": round(float(alpha.sum()), 2)}
    if alpha.sum() < MIN_AREA:
        return None, info
    return alpha, info


# ----------------------------------------------------------------------------- descriptors
def _hull_area(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)
    try:
        return float(ConvexHull(pts).volume)
    except QhullError:          # degenerate (a line of pixels)
        return float(mask.sum())


def descriptors(alpha: np.ndarray) -> dict:
    """Shape descriptors of a coverage image (values in [0, 1], one object)."""
    area = float(alpha.sum())
    ys, xs = np.indices(alpha.shape)
    cy, cx = float((alpha * ys).sum() / area), float((alpha * xs).sum() / area)   # pixel-index coordinates
    mask = alpha >= 0.5
    if not mask.any():
        mask = alpha >= alpha.max() / 2
    rows, cols = np.nonzero(mask)
    bbox = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    # polar radius profile: alpha integrated along rays from the centroid
    theta = np.arange(N_RAYS) * 2 * math.pi / N_RAYS
    t = np.arange(0, max(alpha.shape), RAY_STEP) + RAY_STEP / 2
    py = cy - np.cos(theta)[:, None] * t[None, :]
    px = cx + np.sin(theta)[:, None] * t[None, :]
    samples = ndimage.map_coordinates(alpha, [py.ravel(), px.ravel()], order=1, mode="constant", cval=0.0)
    radius = samples.reshape(N_RAYS, -1).sum(1) * RAY_STEP
    profile = radius / math.sqrt(area)
    # peaks of the circular profile that stand out from their surroundings
    smooth = np.convolve(np.concatenate([profile[-1:], profile, profile[:1]]), [0.25, 0.5, 0.25], "valid")
    neighbours = np.stack([np.roll(smooth, k) for k in (-2, -1, 1, 2)])
    window = np.stack([np.roll(smooth, k) for k in range(-5, 6)])
    is_peak = (smooth >= neighbours.max(0)) & (smooth - window.min(0) > 0.06 * smooth.mean())
    above = float((alpha * np.clip(cy - ys + 0.5, 0, 1)).sum())    # mass above / below the centroid row
    below = float((alpha * np.clip(ys - cy + 0.5, 0, 1)).sum())
    return {"area": round(area, 2), "solidity": float(mask.sum() / _hull_area(mask)),
            "bbox_fill": float(mask.sum() / bbox), "top_bottom": above / max(below, 1e-6),
            "min_max_radius": float(radius.min() / radius.max()), "peaks": int(is_peak.sum()),
            "profile": profile}


def feature_vector(desc: dict) -> np.ndarray:
    return np.concatenate([desc["profile"], [WEIGHTS[k] * desc[k] for k in WEIGHTS]])


# ----------------------------------------------------------------------------- templates
_TEMPLATES: tuple[np.ndarray, np.ndarray] | None = None


def _template_params(rng: np.random.Generator, shape: str) -> dict:
    extent = float(rng.uniform(9.5, 29.0))
    soft = rng.random() < 0.5
    p = {"extent": extent, "angle": float(rng.uniform(-10.5, 10.5)), "offset": tuple(rng.uniform(-0.5, 0.5, 2)),
         "supersample": 4 if soft else 5, "threshold": None if soft else float(rng.uniform(0.2, 0.6))}
    if shape == "star":
        p |= {"star_inner": float(rng.uniform(0.34, 0.52)), "star_raise": float(rng.uniform(0.0, 0.1))}
    elif shape == "triangle":
        p["triangle_height"] = float(rng.uniform(0.78, 1.02))
    elif shape == "cross":
        p["cross_arm"] = float(rng.uniform(0.25, 0.42))
    return p


def templates(per_shape: int = TEMPLATES_PER_SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), shape index (N,)) of rasterised ideal shapes; built once per process (~1-2 s)."""
    global _TEMPLATES
    if _TEMPLATES is None or len(_TEMPLATES[1]) != per_shape * len(SHAPES):
        rng = np.random.default_rng(seed)
        feats, labels = [], []
        for i, shape in enumerate(SHAPES):
            for _ in range(per_shape):
                p = _template_params(rng, shape)
                alpha = rasterise(shape, p.pop("extent"), p.pop("angle"), **p)
                feats.append(feature_vector(descriptors(alpha)))
                labels.append(i)
        _TEMPLATES = (np.array(feats), np.array(labels))
    return _TEMPLATES


# ----------------------------------------------------------------------------- the judge
def classify(alpha: np.ndarray) -> tuple[str, dict]:
    desc = descriptors(alpha)
    feats, labels = templates()
    dist = np.linalg.norm(feats - feature_vector(desc), axis=1)
    per_shape = {s: float(dist[labels == i].min()) for i, s in enumerate(SHAPES)}
    ranked = sorted(per_shape, key=per_shape.get)
    desc = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in desc.items()}
    desc["profile"] = [round(float(v), 3) for v in desc["profile"]]
    return ranked[0], desc | {"distances": {s: round(per_shape[s], 4) for s in ranked},
                              "margin": round(per_shape[ranked[1]] - per_shape[ranked[0]], 4)}


def judge_shape(image: Image.Image, background: str | None = None) -> tuple[str | None, dict]:
    """The shape (one of world.SHAPES) of the largest object in the image, or None when there is none.
    info: segmentation figures (background/object colour, threshold, area) and the shape descriptors."""
    alpha, info = segment(image, background)
    if alpha is None:
        return None, info
    rows, cols = np.nonzero(alpha > 0)
    crop = np.pad(alpha[rows.min():rows.max() + 1, cols.min():cols.max() + 1], 2)
    shape, desc = classify(crop)
    return shape, info | desc | {"area": info["area"]}


# ----------------------------------------------------------------------------- ceiling on real renders
def ceiling(per_shape: int = 10, seed: int = 0) -> dict:
    """Accuracy on single-object scenes drawn by world.render (random RenderStyle) and by benchmarks/alt_render.py
    (anti-aliased or not), by size; plus two-object scenes (one large, one small): is the large one's shape named?"""
    import random

    from benchmarks import alt_render
    rng = random.Random(seed)

    def draw(renderer, scene):
        if renderer == "world_render":
            return world.render(scene, rng, world.RenderStyle.random(rng))
        return alt_render.render(scene, rng, antialias=rng.random() < 0.5)

    def scene_of(shapes, sizes):
        bg = rng.choice(list(world.BACKGROUNDS))
        kinds = [(rng.choice([c for c in world.COLOURS if c != bg]), s) for s in shapes]
        return world.sample_scene(rng, kinds=kinds, background=bg, sizes=sizes)

    out, confusions = {}, {}
    for renderer in ("world_render", "alt_render"):
        for size in ("small", "large", "large+small"):
            hits = []
            for shape in SHAPES:
                for _ in range(per_shape):
                    if size == "large+small":
                        scene = scene_of([shape, rng.choice(SHAPES)], ["large", "small"])
                    else:
                        scene = scene_of([shape], [size])
                    got = judge_shape(draw(renderer, scene))[0]
                    hits.append(got == shape)
                    if got != shape:
                        key = f"{renderer} {size} {shape}->{got}"
                        confusions[key] = confusions.get(key, 0) + 1
            out[f"{renderer} {size}"] = (float(np.mean(hits)), len(hits))
    return {"accuracy": out, "confusions": confusions}


if __name__ == "__main__":
    import argparse
    import json
    p = argparse.ArgumentParser(description="the silhouette judge's accuracy on real ShapesWorld renders")
    p.add_argument("--per-shape", type=int, default=10, help="scenes per shape per renderer and size")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = ceiling(args.per_shape, args.seed)
    print("| renderer | small | large | large+small (largest named) |\n|---|---|---|---|")
    for renderer in ("world_render", "alt_render"):
        cells = [result["accuracy"][f"{renderer} {s}"] for s in ("small", "large", "large+small")]
        print(f"| {renderer} | " + " | ".join(f"{a:.3f} (n={n})" for a, n in cells) + " |")
    print("confusions:", json.dumps(result["confusions"]))
