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
from safetensors.torch import load_file, save_file
from torch import nn

from .component import load_component, save_component
from .rendering import PRIOR_TEMPERATURE, PRIOR_TEMPERATURE_DEFAULT
from ..errors import BundleError, InputError

CONFIG_FILE = "embedding_prior_config.json"
WEIGHTS_FILE = "embedding_prior.safetensors"
RESIDUALS_FILE = "embedding_prior_residuals.safetensors"   # the sampling prior: a Gaussian of what a caption leaves out
MAX_SAMPLES = 64


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
    """bundle.embedding_prior.predict(texts) -> (N, D) float32, L2-normalised image-space embeddings (the mean);
    .sample(texts, num_samples) -> (N, num_samples, D): the mean plus a Gaussian residual (seed 003's sampled
    prior, in its simplest form: what images of a caption add to its mean, fitted on world pairs)."""

    def __init__(self, clip, net: EmbeddingPriorNet, residuals: dict[str, torch.Tensor] | None = None):
        self.clip, self.net = clip, net.eval()
        self.residuals = residuals          # {"mean": (D,), "scale_tril": (D, D)} or None

    @torch.no_grad()
    def predict(self, texts) -> np.ndarray:
        text = torch.from_numpy(self.clip.encode_texts(texts))
        return self.net(text).numpy().astype(np.float32)

    @torch.no_grad()
    def sample(self, texts, num_samples: int = 8, seed: int = 0,
               temperature: float = PRIOR_TEMPERATURE_DEFAULT) -> np.ndarray:
        """(N, num_samples, D) unit vectors: normalise(mean(text) + temperature * r), r ~ N(mu, L L^T)."""
        if self.residuals is None:
            raise BundleError(f"this embedding prior has no {RESIDUALS_FILE}, so it cannot sample; "
                              "python -m clipgpt_train.embedding_prior --residuals-only writes one")
        if not 1 <= num_samples <= MAX_SAMPLES:
            raise InputError(f"num_samples must be 1-{MAX_SAMPLES}, got {num_samples}")
        if not PRIOR_TEMPERATURE[0] <= temperature <= PRIOR_TEMPERATURE[1]:
            raise InputError(f"temperature must be {PRIOR_TEMPERATURE[0]:g}-{PRIOR_TEMPERATURE[1]:g}, got {temperature}")
        mean = torch.from_numpy(self.predict(texts))                                    # (N, D)
        g = torch.Generator().manual_seed(int(seed))
        eps = torch.randn(len(mean), num_samples, mean.shape[1], generator=g)           # (N, S, D)
        r = self.residuals["mean"] + eps @ self.residuals["scale_tril"].T                # (N, S, D)
        return F.normalize(mean[:, None] + temperature * r, dim=-1).numpy().astype(np.float32)

    def save(self, directory: str | Path) -> None:
        save_component(directory, self.net, self.net.cfg, WEIGHTS_FILE, CONFIG_FILE)
        if self.residuals is not None:
            save_file({k: v.contiguous() for k, v in self.residuals.items()}, Path(directory) / RESIDUALS_FILE)

    @classmethod
    def load(cls, clip, directory: str | Path) -> "EmbeddingPrior":
        cfg, state = load_component(directory, EmbeddingPriorConfig, WEIGHTS_FILE, CONFIG_FILE)
        net = EmbeddingPriorNet(cfg)
        net.load_state_dict(state)
        if net.cfg.dim != clip.dim:
            raise BundleError(f"embedding prior at {directory} is for {net.cfg.dim}-d CLIP embeddings; "
                             f"this CLIP has {clip.dim}")
        residuals = None
        if (Path(directory) / RESIDUALS_FILE).is_file():
            residuals = {k: v.float() for k, v in load_file(Path(directory) / RESIDUALS_FILE).items()}
            shapes = {k: tuple(v.shape) for k, v in residuals.items()}
            if shapes != {"mean": (cfg.dim,), "scale_tril": (cfg.dim, cfg.dim)}:
                raise BundleError(f"{Path(directory) / RESIDUALS_FILE} is not a {cfg.dim}-d residual Gaussian")
        return cls(clip, net, residuals)
