"""The shipped ShapesWorld classifier: a small CNN whose logits and units the Explain tab explains
(trained by clipgpt_train.classifier). clipgpt_core.explainers.targets reads it as ClassifierTarget."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .. import world
from .component import load_component, save_component
from ..images import load_image
from .classifier_files import CLASSIFIER_FILES, classifier_dir


@dataclass
class ClassifierConfig:
    """The ShapesWorld CNN: the shape and the colour of the largest object, from a 64x64 image."""
    width: int = 16
    hidden: int = 64                  # penultimate units (the named neurons "unit 0".."unit 63")
    shapes: tuple = tuple(world.SHAPES)
    colours: tuple = tuple(world.COLOURS)
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.25, 0.25, 0.25)


WEIGHTS_FILE, CONFIG_FILE = CLASSIFIER_FILES


class ShapesClassifier(nn.Module):
    """(B, 3, 64, 64) -> {"shape": (B, 6), "colour": (B, 8)} logits; `features` = penultimate units."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def block(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w),
                                  nn.AdaptiveMaxPool2d(1), nn.Flatten())           # (B, 4w)
        self.penultimate = nn.Sequential(nn.Linear(4 * w, cfg.hidden), nn.ReLU())   # (B, hidden)
        self.shape_head = nn.Linear(cfg.hidden, len(cfg.shapes))
        self.colour_head = nn.Linear(cfg.hidden, len(cfg.colours))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.penultimate(self.body(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {"shape": self.shape_head(h), "colour": self.colour_head(h)}

    def tensor(self, images) -> torch.Tensor:
        """images (PIL / paths) -> (B, 3, 64, 64) normalised."""
        arr = np.stack([np.asarray(load_image(im).convert("RGB").resize((64, 64)), dtype=np.float32) / 255
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2)
        return (x - torch.tensor(self.cfg.mean)[:, None, None]) / torch.tensor(self.cfg.std)[:, None, None]

    def save(self, directory) -> None:
        save_component(directory, self, self.cfg, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, directory) -> "ShapesClassifier":
        cfg, state = load_component(directory, ClassifierConfig, WEIGHTS_FILE, CONFIG_FILE)
        cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in asdict(cfg).items()})
        model = cls(cfg)
        model.load_state_dict(state)
        return model.eval()


def load_classifier(bundle=None) -> ShapesClassifier | None:
    """The ShapesClassifier in classifier_dir(bundle), or None."""
    d = classifier_dir(bundle)
    return ShapesClassifier.load(d) if d is not None else None
