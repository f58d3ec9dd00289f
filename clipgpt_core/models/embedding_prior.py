"""Caption -> CLIP image embedding (seed 002's caption->CLIP; seed 003's unCLIP prior).

CLIP's text and image embeddings live in different regions of the sphere (the modality gap),
and a caption says less than an image shows. unCLIP learns p(image embedding | caption) for
that reason; here the same job is done by a deterministic residual MLP on the CLIP text
embedding, trained contrastively against the embeddings of true images, so "via prior"
queries land where images are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .component import load_component, save_component
from ..errors import BundleError

CONFIG_FILE = "embedding_prior_config.json"
WEIGHTS_FILE = "embedding_prior.safetensors"


@dataclass
class EmbeddingPriorConfig:
    dim: int = 128
    hidden: int = 512
    layers: int = 2


class EmbeddingPriorNet(nn.Module):
    """(B, D) normalised text embedding -> (B, D) normalised predicted image embedding."""

    def __init__(self, cfg: EmbeddingPriorConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.hidden), nn.GELU(),
                                                  nn.Linear(cfg.hidden, cfg.dim)) for _ in range(cfg.layers))
        self.logit_scale = nn.Parameter(torch.tensor(np.log(20.0), dtype=torch.float32))

    def forward(self, text_embeds: torch.Tensor) -> torch.Tensor:
        x = text_embeds
        for block in self.blocks:
            x = x + block(x)
        return F.normalize(x, dim=-1)


class EmbeddingPrior:
    """bundle.embedding_prior.predict(texts) -> (N, D) float32, L2-normalised image-space embeddings."""

    def __init__(self, clip, net: EmbeddingPriorNet):
        self.clip, self.net = clip, net.eval()

    @torch.no_grad()
    def predict(self, texts) -> np.ndarray:
        text = torch.from_numpy(self.clip.encode_texts(texts))
        return self.net(text).numpy().astype(np.float32)

    def save(self, directory: str | Path) -> None:
        save_component(directory, self.net, self.net.cfg, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, clip, directory: str | Path) -> "EmbeddingPrior":
        cfg, state = load_component(directory, EmbeddingPriorConfig, WEIGHTS_FILE, CONFIG_FILE)
        net = EmbeddingPriorNet(cfg)
        net.load_state_dict(state)
        if net.cfg.dim != clip.dim:
            raise BundleError(f"embedding prior at {directory} is for {net.cfg.dim}-d CLIP embeddings; "
                             f"this CLIP has {clip.dim}")
        return cls(clip, net)
