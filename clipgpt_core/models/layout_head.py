"""The layout head: a CLIP image vector -> the scene it holds, as the planner's layout map needs it (issue 40).

    head = LayoutHead.load("runs/layout_head")          # trained by clipgpt_train/layout_head.py
    scenes = head.predict(bundle.clip.encode_images(images))   # -> [world.Scene], one per vector

An MLP on the (L2-normalised) vector with softmax heads per 3x3 cell of the world (world.POSITIONS): empty or an
object, the object's colour, shape and size, and where in its cell its centre lies (a regression, tanh); plus the
scene's background. The vocabulary is the world's (clipgpt_core.world), written into the config so a saved head
says what its outputs mean. One object per cell: the world may put two small objects in one cell, the head keeps
one (the larger). Renderer.decode(method="layout") draws the predicted scene through the shipped layout UNet
(models/decoder.py), so places (the cell) are kept, unlike variations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..world import scenes as world
from .component import load_component, save_component

CONFIG_FILE = "layout_head_config.json"
WEIGHTS_FILE = "layout_head.safetensors"
LAYOUT_HEAD_DIR = "layout_head"      # beside the renderer's folder in a bundle (as decoder/)
MAX_OBJECTS = max(world.COUNT_WORDS)  # the world's scenes hold at most this many objects


@dataclass
class LayoutHeadConfig:
    dim: int = 128
    hidden: int = 768
    layers: int = 3
    dropout: float = 0.1
    colours: list = field(default_factory=lambda: list(world.COLOURS))
    shapes: list = field(default_factory=lambda: list(world.SHAPES))
    sizes: list = field(default_factory=lambda: list(world.SIZES))
    backgrounds: list = field(default_factory=lambda: list(world.BACKGROUNDS))
    positions: list = field(default_factory=lambda: list(world.POSITIONS))

    @property
    def per_cell(self) -> int:          # occupied (2) + colour + shape + size + offset (2)
        return 2 + len(self.colours) + len(self.shapes) + len(self.sizes) + 2


class LayoutHeadNet(nn.Module):
    """(B, dim) vector -> dict of logits: occupied (B, 9, 2), colour (B, 9, C), shape (B, 9, S), size (B, 9, Z),
    offset (B, 9, 2) in [-1, 1] (of half a cell, from its centre), background (B, K)."""

    def __init__(self, cfg: LayoutHeadConfig):
        super().__init__()
        self.cfg = cfg
        layers, width = [], cfg.dim
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        self.trunk = nn.Sequential(*layers)
        self.cells = nn.Linear(width, len(cfg.positions) * cfg.per_cell)
        self.background = nn.Linear(width, len(cfg.backgrounds))

    def forward(self, x: torch.Tensor) -> dict:
        h = self.trunk(F.normalize(x, dim=-1))
        c = self.cells(h).view(len(x), len(self.cfg.positions), self.cfg.per_cell)
        sizes = [2, len(self.cfg.colours), len(self.cfg.shapes), len(self.cfg.sizes), 2]
        occupied, colour, shape, size, offset = torch.split(c, sizes, dim=-1)
        return {"occupied": occupied, "colour": colour, "shape": shape, "size": size,
                "offset": torch.tanh(offset), "background": self.background(h)}


# ----------------------------------------------------------------------------- scenes <-> targets
def _cell_centre(k: int) -> tuple[float, float]:
    row, col = divmod(k, 3)
    third = world.CANVAS / 3
    return (col + 0.5) * third, (row + 0.5) * third


def scene_targets(scenes, cfg: LayoutHeadConfig) -> dict:
    """Scenes -> the head's targets: occupied (N, 9) long, colour/shape/size (N, 9) long (-100 where empty),
    offset (N, 9, 2), background (N,). Two objects in one cell: the larger one is the cell's."""
    n, cells = len(scenes), len(cfg.positions)
    occ = torch.zeros(n, cells, dtype=torch.long)
    colour, shape, size = (torch.full((n, cells), -100, dtype=torch.long) for _ in range(3))
    offset = torch.zeros(n, cells, 2)
    background = torch.zeros(n, dtype=torch.long)
    half = world.CANVAS / 6
    for i, s in enumerate(scenes):
        background[i] = cfg.backgrounds.index(s.background)
        for o in sorted(s.objects, key=lambda o: o.extent):          # the larger one written last, kept
            k = cfg.positions.index(o.position)
            cx, cy = _cell_centre(k)
            occ[i, k] = 1
            colour[i, k], shape[i, k] = cfg.colours.index(o.colour), cfg.shapes.index(o.shape)
            size[i, k] = cfg.sizes.index(o.size)
            offset[i, k] = torch.tensor([np.clip((o.cx - cx) / half, -1, 1), np.clip((o.cy - cy) / half, -1, 1)])
    return {"occupied": occ, "colour": colour, "shape": shape, "size": size, "offset": offset,
            "background": background}


def head_loss(out: dict, t: dict) -> torch.Tensor:
    """Cross-entropy on every softmax head (attributes only where a cell holds an object) + offsets' MSE there."""
    ce = lambda logits, y: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),   # noqa: E731
                                           ignore_index=-100)
    has = t["occupied"].float()[..., None]
    off = ((out["offset"] - t["offset"]) ** 2 * has).sum() / has.sum().clamp(min=1)
    return (ce(out["occupied"], t["occupied"]) + ce(out["colour"], t["colour"]) + ce(out["shape"], t["shape"])
            + ce(out["size"], t["size"]) + F.cross_entropy(out["background"], t["background"]) + off)


def scenes_from(out: dict, cfg: LayoutHeadConfig) -> list[world.Scene]:
    """The head's outputs -> one world.Scene each: an object in every cell more likely occupied than not (the
    likeliest cell when none is; the MAX_OBJECTS likeliest at most), each of its attributes the argmax (an object's
    colour never the background's, as in the world), its centre at the predicted offset in its cell, its side the
    middle of its size's range, upright."""
    occupied = out["occupied"].softmax(-1)[..., 1]
    half = world.CANVAS / 6
    scenes = []
    for i in range(len(occupied)):
        bg = cfg.backgrounds[int(out["background"][i].argmax())]
        ranked = sorted(range(len(cfg.positions)), key=lambda k: -float(occupied[i, k]))
        cells = [k for k in ranked[:MAX_OBJECTS] if occupied[i, k] > 0.5] or ranked[:1]
        objs = []
        for k in cells:
            colour_logits = out["colour"][i, k].clone()
            if bg in cfg.colours:
                colour_logits[cfg.colours.index(bg)] = -torch.inf
            size = cfg.sizes[int(out["size"][i, k].argmax())]
            cx, cy = _cell_centre(k)
            dx, dy = (float(v) * half for v in out["offset"][i, k])
            objs.append(_obj(cfg.colours[int(colour_logits.argmax())], cfg.shapes[int(out["shape"][i, k].argmax())],
                             size, cx + dx, cy + dy))
        scenes.append(world.Scene(bg, tuple(objs)))
    return scenes


# ----------------------------------------------------------------------------- analysis by synthesis
def _obj(colour, shape, size, cx, cy) -> world.Obj:
    return world.Obj(colour, shape, size, cx, cy, float(np.mean(world.SIZES[size])), 0.0)


def _moves(scene: world.Scene, out: dict, i: int, cfg: LayoutHeadConfig, top: int) -> list[world.Scene]:
    """Scenes one edit from `scene` (the head's outputs for vector i propose them): an object's colour and shape
    from the head's `top` likeliest at its cell, its size flipped; two objects' colours, shapes or all three swapped;
    an object dropped; an object moved to one of the two likeliest free cells; an object added in the likeliest."""
    objs, bg = list(scene.objects), scene.background
    cell = lambda o: cfg.positions.index(o.position)   # noqa: E731
    out_scenes = []

    def put(new):
        out_scenes.append(world.Scene(bg, tuple(new)))
    for j, o in enumerate(objs):
        k = cell(o)
        colours = [cfg.colours[c] for c in out["colour"][i, k].argsort(descending=True)[:top + 1].tolist()
                   if cfg.colours[c] != bg][:top]
        shapes = [cfg.shapes[c] for c in out["shape"][i, k].argsort(descending=True)[:top].tolist()]
        for c in colours:
            for sh in shapes:
                if (c, sh) != (o.colour, o.shape):
                    put(objs[:j] + [_obj(c, sh, o.size, o.cx, o.cy)] + objs[j + 1:])
        other = next(z for z in cfg.sizes if z != o.size) if len(cfg.sizes) > 1 else o.size
        put(objs[:j] + [_obj(o.colour, o.shape, other, o.cx, o.cy)] + objs[j + 1:])
        if len(objs) > 1:
            put(objs[:j] + objs[j + 1:])
        for m in range(j + 1, len(objs)):
            p = objs[m]
            for a, b in (((o.colour, p.shape, p.size), (p.colour, o.shape, o.size)),
                         ((p.colour, o.shape, o.size), (o.colour, p.shape, p.size)),
                         ((p.colour, p.shape, p.size), (o.colour, o.shape, o.size))):
                new = list(objs)
                new[j], new[m] = _obj(*a, o.cx, o.cy), _obj(*b, p.cx, p.cy)
                put(new)
    taken = {cell(o) for o in objs}
    free = [k for k in out["occupied"][i].softmax(-1)[:, 1].argsort(descending=True).tolist() if k not in taken]
    for j, o in enumerate(objs):                       # an object moved to one of the likeliest free cells
        for k in free[:2]:
            cx, cy = _cell_centre(k)
            put(objs[:j] + [_obj(o.colour, o.shape, o.size, cx, cy)] + objs[j + 1:])
    if free and len(objs) < MAX_OBJECTS:
        k = free[0]
        colour = next(cfg.colours[c] for c in out["colour"][i, k].argsort(descending=True).tolist()
                      if cfg.colours[c] != bg)
        cx, cy = _cell_centre(k)
        put(objs + [_obj(colour, cfg.shapes[int(out["shape"][i, k].argmax())],
                         cfg.sizes[int(out["size"][i, k].argmax())], cx, cy)])
    return out_scenes


def refine(scenes: list[world.Scene], vectors, out: dict, clip, cfg: LayoutHeadConfig, rounds: int = 3,
           top: int = 3) -> list[world.Scene]:
    """Analysis by synthesis: each scene drawn by the world's renderer and encoded by `clip` (the CLIP the vectors
    came from); the edits the head proposes (_moves) tried, and the one whose image's vector is nearest the target
    kept, for up to `rounds` rounds, while it comes nearer. The head reads which objects a vector holds and where
    objects are; CLIP's own cosine decides which object is where (per cell, the head alone binds poorly)."""
    import random
    vectors = np.asarray(vectors, np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def cosines(candidates: list[world.Scene], v: np.ndarray) -> np.ndarray:
        images = [world.render(c, random.Random(0)) for c in candidates]
        return clip.encode_images(images) @ v
    result = []
    for i, (scene, v) in enumerate(zip(scenes, vectors)):
        best = float(cosines([scene], v)[0])
        for _ in range(rounds):
            candidates = _moves(scene, out, i, cfg, top)
            if not candidates:
                break
            c = cosines(candidates, v)
            j = int(c.argmax())
            if c[j] <= best:
                break
            scene, best = candidates[j], float(c[j])
        result.append(scene)
    return result


class LayoutHead:
    """head.predict(vectors) -> [world.Scene]; head.save(dir); LayoutHead.load(dir)."""

    def __init__(self, net: LayoutHeadNet):
        self.net = net.eval()
        self.cfg = net.cfg

    @torch.no_grad()
    def outputs(self, vectors) -> dict:
        x = torch.as_tensor(np.asarray(vectors, np.float32))
        return self.net(x[None] if x.ndim == 1 else x)

    def predict(self, vectors, clip=None, rounds: int = 3) -> list[world.Scene]:
        """vectors -> scenes; with `clip` (the vectors' CLIP) refined by analysis by synthesis (refine)."""
        out = self.outputs(vectors)
        scenes = scenes_from(out, self.cfg)
        return refine(scenes, vectors, out, clip, self.cfg, rounds) if clip is not None and rounds else scenes

    def save(self, directory: str | Path) -> Path:
        return save_component(directory, self.net, self.cfg, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "LayoutHead":
        from .rendering import RenderError
        if not (Path(directory) / CONFIG_FILE).is_file():
            raise RenderError(f"No layout head at {directory} (no {CONFIG_FILE}). Train one with "
                              f"`python -m clipgpt_train.layout_head --out {directory}`")
        cfg, state = load_component(directory, LayoutHeadConfig, WEIGHTS_FILE, CONFIG_FILE)
        unknown = [(name, v) for name, mine in (("colours", cfg.colours), ("shapes", cfg.shapes),
                                                ("sizes", cfg.sizes), ("backgrounds", cfg.backgrounds))
                   for v in mine if v not in getattr(world, name.upper())]
        if unknown or cfg.positions != list(world.POSITIONS):
            raise RenderError(f"the layout head at {directory} speaks another world's vocabulary ({unknown[:3]}); "
                              f"retrain it")
        net = LayoutHeadNet(cfg)
        net.load_state_dict(state)
        return cls(net)
