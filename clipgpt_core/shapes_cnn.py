"""The built-in CLIP's image tower: a small full-resolution CNN, registered with timm.

open_clip builds timm models as vision towers from a JSON config (`timm_model_name`), so
registering this network with timm's registry is how `shapes-clip` stays an ordinary
open_clip config, loadable by open_clip's factory and by clip-retrieval's `clip back`.

Why not open_clip's ModifiedResNet: its stem downsamples 4x before any residual block, so a
10-px ShapesWorld object is 2-3 feature pixels wide by the time the network can look at its
outline. In a like-for-like test (supervised facts, 600 steps of 64 images on this CPU) that
tower left shape at chance (0.25) while this one reached 0.68, at 0.6x the cost per step.
The head flattens the final 4x4 map instead of pooling it, so where an object is (and which
colour sits with which shape) survives into the embedding.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import register_model


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ShapesCNN(nn.Module):
    """64x64 image -> flattened (4*width, 4, 4) feature map; the CLIP projection lives in open_clip."""

    def __init__(self, width: int = 32, image_size: int = 64, num_classes: int = 0, **_):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(3, w // 2), _conv(w // 2, w, 2), _conv(w, w),                 # (w, 32, 32)
            _conv(w, 2 * w, 2), _conv(2 * w, 2 * w),                           # (2w, 16, 16)
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),                       # (4w, 8, 8)
            _conv(4 * w, 4 * w, 2),                                            # (4w, 4, 4)
        )
        self.num_features = 4 * w * (image_size // 16) ** 2
        self.default_cfg = self.pretrained_cfg = {"input_size": (3, image_size, image_size)}
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int = 0, global_pool: str = "") -> None:
        # open_clip asks for no classifier (num_classes=0) and adds its own projection
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 3, 64, 64) -> (B, num_features)
        return self.head(self.features(x).flatten(1))


@register_model
def shapes_cnn(pretrained: bool = False, **kwargs) -> ShapesCNN:
    if pretrained:
        raise ValueError("shapes_cnn has no pretrained weights; the built-in bundle ships them")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay")}
    return ShapesCNN(**kwargs)
