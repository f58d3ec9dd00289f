"""A vision model's outputs as functions to explain, f(image) -> float: `ClassifierTarget` (a logit or unit of
the shipped ShapesWorld CNN, clipgpt_train.classifier) or `ModelUnit` (any torch vision model, a layer picked by
name and a unit, read through a forward hook). torch is imported where a model is run."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..images import load_image
from ..models.classifier_files import output_names
from .errors import TargetError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from ..models.classifier import ShapesClassifier


@dataclass
class ClassifierTarget:
    """One output of the ShapesWorld classifier: "shape:circle" / "colour:red" (a logit) or "unit 12"
    (a penultimate unit). `answer` is known for logits: the class."""
    model: ShapesClassifier
    output: str
    batch_size: int = 256

    def __post_init__(self):
        if self.output not in self.outputs(self.model):
            raise TargetError(f"The classifier has no output {self.output!r}; pick one of "
                              f"{', '.join(self.outputs(self.model)[:20])}, ...")

    @staticmethod
    def outputs(model: ShapesClassifier) -> list[str]:
        return output_names(model.cfg.shapes, model.cfg.colours, model.cfg.hidden)

    @property
    def answer(self) -> dict:
        head, _, value = self.output.partition(":")
        return {head: value} if value else {}

    def score(self, images) -> np.ndarray:
        import torch
        images = list(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            with torch.no_grad():
                x = self.model.tensor(images[i:i + self.batch_size])
                if self.output.startswith("unit "):
                    out.append(self.model.features(x)[:, int(self.output.split()[1])])
                else:
                    head, _, value = self.output.partition(":")
                    classes = self.model.cfg.shapes if head == "shape" else self.model.cfg.colours
                    out.append(self.model(x)[head][:, list(classes).index(value)])
        return torch.cat(out).double().numpy()


def imagenet_tensor(image, side: int = 224) -> torch.Tensor:
    """An image -> (3, side, side) tensor with ImageNet's normalisation: what most torchvision / timm models take."""
    import torch
    a = np.asarray(load_image(image).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    x = torch.from_numpy(a).permute(2, 0, 1)
    return (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@dataclass
class ModelUnit:
    """A unit of any torch vision model: the output of the module named `layer` (as in
    model.named_modules(), "" for the whole model), channel `unit`, averaged over space, read with a
    forward hook. `preprocess` maps a PIL image to a (3, H, W) tensor (default: 224x224, ImageNet
    normalisation)."""
    model: nn.Module
    layer: str
    unit: int
    preprocess: Callable | None = None
    batch_size: int = 64
    answer: dict = field(default_factory=dict)

    def __post_init__(self):
        modules = dict(self.model.named_modules())
        if self.layer not in modules:
            names = [n for n in modules if n][:30]
            raise TargetError(f"The model has no layer {self.layer!r}; layers include {', '.join(names)}")
        self.model.eval()

    def score(self, images) -> np.ndarray:
        import torch
        pre = self.preprocess or imagenet_tensor
        module = dict(self.model.named_modules())[self.layer]
        got = []
        handle = module.register_forward_hook(lambda _m, _i, out: got.append(out[0] if isinstance(out, tuple) else out))
        try:
            images = list(images)
            out = []
            for i in range(0, len(images), self.batch_size):
                got.clear()
                with torch.no_grad():
                    self.model(torch.stack([pre(load_image(im)) for im in images[i:i + self.batch_size]]))
                a = got[0]                                                  # (B, C, ...) or (B, C)
                if self.unit >= a.shape[1]:
                    raise TargetError(f"Layer {self.layer!r} has {a.shape[1]} units; unit {self.unit} does not exist")
                a = a[:, self.unit]
                out.append(a.flatten(1).mean(1) if a.ndim > 1 else a)
        finally:
            handle.remove()
        return torch.cat(out).double().numpy()
