"""A second CNN for Explain's benchmark, trained on ShapesWorld for another task than the shipped classifier's
(which reads the largest object's colour and shape): *where* objects are (which of the 3x3 cells hold one, one
logit each), *how many* there are (1-4) and the background. Its logits and hidden units are functions of position,
number and background, which the classifier's are not, so Explain is measured on units it was not tuned on.

    model = train(CellsConfig())                       # ~1 min on 2 CPU cores
    outputs(model, images)                             # {"cell:top left": (N,), ..., "count:2": (N,), ...}
    explain_units(bundle, model, "penultimate", images)   # its hidden units, through forward hooks
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clipgpt_core import world
from clipgpt_core.images import load_image

COUNTS = (1, 2, 3, 4)


@dataclass
class CellsConfig:
    width: int = 16
    hidden: int = 128              # penultimate units (a 128-unit layer: the layer timing)
    n_images: int = 6000
    epochs: int = 4
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0


class CellsCNN(nn.Module):
    """(B, 3, 64, 64) in [0, 1] -> {"cell": (B, 9), "count": (B, 4), "background": (B, 3)} logits."""

    def __init__(self, cfg: CellsConfig):
        super().__init__()
        w = cfg.width

        def block(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
        # no global pooling before the 4x4 map is flattened: where things are must survive to the heads
        self.body = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 2 * w), block(2 * w, 2 * w),
                                  nn.Flatten())                                    # (B, 2w * 4 * 4)
        self.penultimate = nn.Sequential(nn.Linear(2 * w * 16, cfg.hidden), nn.ReLU())   # (B, hidden)
        self.cell = nn.Linear(cfg.hidden, len(world.POSITIONS))
        self.count = nn.Linear(cfg.hidden, len(COUNTS))
        self.background = nn.Linear(cfg.hidden, len(world.BACKGROUNDS))

    def tensor(self, images) -> torch.Tensor:
        """What layer_activations feeds it (as the shipped classifier's own `tensor`)."""
        return to_tensor(images)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.penultimate(self.body(x))
        return {"cell": self.cell(h), "count": self.count(h), "background": self.background(h)}


def to_tensor(images) -> torch.Tensor:
    """Images (PIL or paths) -> (N, 3, 64, 64) in [0, 1]."""
    arr = np.stack([np.asarray(load_image(im).convert("RGB").resize((64, 64)), np.float32) / 255 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def labels(scenes) -> dict[str, torch.Tensor]:
    cells = torch.zeros(len(scenes), len(world.POSITIONS))
    for i, s in enumerate(scenes):
        for o in s.objects:
            cells[i, world.POSITIONS.index(o.position)] = 1.0
    return {"cell": cells, "count": torch.tensor([COUNTS.index(len(s.objects)) for s in scenes]),
            "background": torch.tensor([list(world.BACKGROUNDS).index(s.background) for s in scenes])}


def train(cfg: CellsConfig) -> CellsCNN:
    """Fixed seeds: the same config gives the same model. World images of seeds 7,000,000+ (no other set's)."""
    torch.manual_seed(cfg.seed)
    exs = [world.example(7_000_000 + cfg.seed * cfg.n_images + i, split="any") for i in range(cfg.n_images)]
    x, y = to_tensor([e.image for e in exs]), labels([e.scene for e in exs])
    model = CellsCNN(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = random.Random(cfg.seed)
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()
    model.train()
    for _ in range(cfg.epochs):
        order = list(range(len(x)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch):
            idx = order[i:i + cfg.batch]
            out = model(x[idx])
            loss = bce(out["cell"], y["cell"][idx]) + ce(out["count"], y["count"][idx]) + \
                ce(out["background"], y["background"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def outputs(model: CellsCNN, images) -> dict[str, np.ndarray]:
    """Every logit as a function of images: {"cell:<position>", "count:<n>", "background:<name>": (N,)}."""
    out = model(to_tensor(images))
    names = {"cell": world.POSITIONS, "count": [str(c) for c in COUNTS], "background": list(world.BACKGROUNDS)}
    return {f"{head}:{name}": out[head][:, j].numpy().astype(np.float64)
            for head, ns in names.items() for j, name in enumerate(ns)}


def answer(output: str) -> dict | None:
    """What a right explanation of a logit states (None: nothing stated_values can check, e.g. a count)."""
    head, name = output.split(":", 1)
    return {"cell": {"position": name}, "background": {"background": name}}.get(head)


@torch.no_grad()
def accuracy(model: CellsCNN, images, scenes) -> dict[str, float]:
    out, y = model(to_tensor(images)), labels(scenes)
    return {"cell": float(((out["cell"] > 0).float() == y["cell"]).float().mean()),
            "count": float((out["count"].argmax(1) == y["count"]).float().mean()),
            "background": float((out["background"].argmax(1) == y["background"]).float().mean())}
