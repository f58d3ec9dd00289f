"""The built-in CLIP's image tower: a small full-resolution CNN, registered with timm.

open_clip builds timm models as vision towers from a JSON config (`timm_model_name`), so
registering this network with timm's registry is how `shapes-clip` stays an ordinary
open_clip config, loadable by open_clip's factory and by clip-retrieval's `clip back`.

Why not open_clip's ModifiedResNet: its stem downsamples 4x before any residual block, so a
10-px ShapesWorld object is 2-3 feature pixels wide by the time the network can look at its
outline. In a like-for-like test (supervised facts, 600 steps of 64 images on this CPU) that
tower left shape at chance (0.25) while this one reached 0.68, at 0.6x the cost per step.

Two heads (the config's `head`):
  * "flatten" (v1, `shapes-clip`): one more stride-2 conv to 4x4, flattened. Linear probes on 3-object
    scenes read circle/star/cross/diamond presence at AUC 0.77-0.80 from that 4x4 map but 0.86-0.91 from
    the 8x8 map before it: the last stride and the flatten lose what the per-location features know.
  * "attention" (v2, `shapes-clip-v2`): the 8x8 map stays 8x8; a learned position embedding, one
    transformer block over the 64 locations (objects see each other: counting and binding are
    relations between locations), then `queries` learned queries attention-pool it. Each query can
    take one object, so a 4-object scene is not averaged into one vector.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import register_model


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class AttentionHead(nn.Module):
    """(B, C, H, W) map -> (B, queries * C): position embedding, one pre-norm transformer block over
    the H*W locations, then multi-head attention pooling by learned queries (as CoCa / open_clip's
    AttentionalPooler, which pools a ViT's tokens the same way)."""

    def __init__(self, dim: int, tokens: int, queries: int, heads: int = 4):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.queries = nn.Parameter(torch.randn(1, queries, dim) * 0.02)
        self.ln_kv = nn.LayerNorm(dim)
        self.pool = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_out = nn.LayerNorm(dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = fmap.flatten(2).transpose(1, 2) + self.pos                     # (B, HW, C)
        x = self.ln_kv(self.block(x))
        q = self.queries.expand(x.shape[0], -1, -1)                        # (B, Q, C)
        pooled, _ = self.pool(q, x, x, need_weights=False)                  # (B, Q, C)
        return self.ln_out(pooled).flatten(1)                              # (B, Q*C)


class ShapesCNN(nn.Module):
    """64x64 image -> (num_features,); the CLIP projection lives in open_clip."""

    def __init__(self, width: int = 32, image_size: int = 64, num_classes: int = 0, head: str = "flatten",
                 queries: int = 8, **_):
        super().__init__()
        w = width
        layers = [
            _conv(3, w // 2), _conv(w // 2, w, 2), _conv(w, w),                 # (w, 32, 32)
            _conv(w, 2 * w, 2), _conv(2 * w, 2 * w),                           # (2w, 16, 16)
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),                       # (4w, 8, 8)
        ]
        if head == "flatten":
            layers.append(_conv(4 * w, 4 * w, 2))                              # (4w, 4, 4)
            self.pool = nn.Flatten(1)
            self.num_features = 4 * w * (image_size // 16) ** 2
        elif head == "attention":
            layers.append(_conv(4 * w, 4 * w))                                 # (4w, 8, 8)
            self.pool = AttentionHead(4 * w, (image_size // 8) ** 2, queries)
            self.num_features = 4 * w * queries
        else:
            raise ValueError(f"shapes_cnn head must be 'flatten' or 'attention', not {head!r}")
        self.features = nn.Sequential(*layers)
        self.default_cfg = self.pretrained_cfg = {"input_size": (3, image_size, image_size)}
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int = 0, global_pool: str = "") -> None:
        # open_clip asks for no classifier (num_classes=0) and adds its own projection
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:   # (B, 3, 64, 64) -> (B, 4w, h, w)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 3, 64, 64) -> (B, num_features)
        return self.head(self.pool(self.features(x)))


def _build(pretrained: bool, **kwargs) -> ShapesCNN:
    if pretrained:
        raise ValueError("shapes_cnn has no pretrained weights; the built-in bundle ships them")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay")}
    return ShapesCNN(**kwargs)


# open_clip passes no model kwargs to timm, so each head is its own registered name
@register_model
def shapes_cnn(pretrained: bool = False, **kwargs) -> ShapesCNN:
    return _build(pretrained, **kwargs)


@register_model
def shapes_cnn_attention(pretrained: bool = False, **kwargs) -> ShapesCNN:
    return _build(pretrained, head="attention", **kwargs)
