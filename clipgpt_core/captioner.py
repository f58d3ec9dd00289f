"""CLIP -> GPT captioning (seed 002, ClipCap): an MLP maps the CLIP image embedding to a few
prefix embeddings that the caption prior continues into a caption.

The prior stays frozen (ClipCap's prefix-only variant), so the captioner component is only the
mapper. A bundle without a trained mapper still captions: it samples a pool of captions from
the prior and ranks them by CLIP similarity to the image (`mode` says which one ran).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .component import load_component, save_component
from .prior import CaptionPrior, KVCache, _until_eot, generate

CONFIG_FILE = "mapper_config.json"
WEIGHTS_FILE = "mapper.safetensors"
MODE_MAPPER = "ClipCap mapper (CLIP image embedding -> GPT prefix)"
MODE_FALLBACK = "training-free: prior samples ranked by CLIP similarity"


@dataclass
class MapperConfig:
    clip_dim: int = 128
    gpt_width: int = 128
    prefix_length: int = 4
    hidden: int = 512


class PrefixMapper(nn.Module):
    """ClipCap's MLP mapper: (B, clip_dim) -> (B, prefix_length, gpt_width)."""

    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.clip_dim, cfg.hidden), nn.Tanh(),
                                 nn.Linear(cfg.hidden, cfg.prefix_length * cfg.gpt_width))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.net(image_embeds).view(-1, self.cfg.prefix_length, self.cfg.gpt_width)

    def save(self, directory: str | Path) -> None:
        save_component(directory, self, self.cfg, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "PrefixMapper":
        cfg, state = load_component(directory, MapperConfig, WEIGHTS_FILE, CONFIG_FILE)
        mapper = cls(cfg)
        mapper.load_state_dict(state)
        return mapper.eval()


@torch.no_grad()
def beam_search(prior: CaptionPrior, prefix_embeds: torch.Tensor, num_beams: int = 3,
                length_penalty: float = 1.0) -> list[list[tuple[list[int], float]]]:
    """Beam search after prefix embeddings (B, L, W) and start-of-text, with a KV cache.

    -> per image, num_beams (token ids, score) best first; score = sum log p / length**length_penalty."""
    gpt, cfg = prior.gpt, prior.cfg
    b, k, eot = prefix_embeds.shape[0], num_beams, cfg.eot_token
    sot = torch.full((b, 1), cfg.sot_token, device=prefix_embeds.device)
    x = torch.cat([prefix_embeds, gpt.embed(sot)], dim=1).repeat_interleave(k, dim=0)   # (B*K, L+1, W)
    cache = KVCache(cfg, b * k, x.device, x.dtype)
    scores = torch.full((b, k), float("-inf"), device=x.device)
    scores[:, 0] = 0.0                                        # all beams start equal: expand beam 0 only
    seqs = torch.zeros(b * k, 0, dtype=torch.long, device=x.device)
    lengths = torch.zeros(b * k, device=x.device)
    done = torch.zeros(b * k, dtype=torch.bool, device=x.device)
    for _ in range(cfg.context_length - x.shape[1]):
        logp = gpt.logits(gpt.hidden(x, cache)[:, -1]).float().log_softmax(-1)           # (B*K, V)
        # a finished beam only extends with padding, at no cost
        logp[done] = float("-inf")
        logp[done, 0] = 0.0
        total = (scores.view(-1, 1) + logp).view(b, -1)                                  # (B, K*V)
        scores, flat = total.topk(k, dim=1)
        beam, token = flat // logp.shape[1], flat % logp.shape[1]
        index = (torch.arange(b, device=x.device)[:, None] * k + beam).view(-1)
        cache.reorder(index)
        token = token.view(-1)
        seqs = torch.cat([seqs[index], token[:, None]], dim=1)
        lengths = lengths[index] + (~done[index]).float()
        done = done[index] | (token == eot)
        if done.all():
            break
        x = gpt.embed(token[:, None])
    normed = (scores.view(-1) / lengths.clamp(min=1) ** length_penalty).view(b, k)
    out = []
    for i in range(b):
        rows = [(_until_eot(seqs[i * k + j].tolist(), eot), float(normed[i, j])) for j in range(k)]
        out.append(sorted(rows, key=lambda r: -r[1]))
    return out


class Captioner:
    """Images -> captions through CLIP and the caption prior."""

    def __init__(self, clip, prior: CaptionPrior, mapper: PrefixMapper | None = None, pool_size: int = 512):
        self.clip, self.prior, self.mapper = clip, prior, mapper
        self.pool_size = pool_size
        # fallback: pool captions, their CLIP text embeddings, their per-token prior log-probs
        self._pool: tuple[list[str], np.ndarray, np.ndarray] | None = None

    @property
    def mode(self) -> str:
        return MODE_MAPPER if self.mapper is not None else MODE_FALLBACK

    def prefix(self, image_embeds: np.ndarray) -> torch.Tensor:
        """CLIP image embeddings (N, D) -> prefix embeddings (N, L, W)."""
        with torch.no_grad():
            return self.mapper(torch.from_numpy(image_embeds).to(self.prior.device))

    def candidates(self, images, num_beams: int = 3, num_samples: int = 0, temperature: float = 1.0,
                   seed: int | None = 0) -> list[list[dict]]:
        """Per image: candidate captions with their log-probability under the captioner (or the
        prior) and their CLIP similarity to the image, best CLIP similarity first.

        Beam search gives num_beams candidates; num_samples > 0 adds sampled ones."""
        images = list(images)
        if not images:
            return []
        embs = self.clip.encode_images(images)          # once: for the prefix and for ranking
        if self.mapper is None:
            return self._fallback(embs, max(num_beams, num_samples, 1))
        prefix = self.prefix(embs)
        per_image = [[(self.prior.decode(ids), s) for ids, s in beams]
                     for beams in beam_search(self.prior, prefix, max(1, num_beams))]
        if num_samples:
            gen = torch.Generator(device=self.prior.device)
            gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
            rep = prefix.repeat_interleave(num_samples, dim=0)
            start = torch.full((rep.shape[0], 1), self.prior.cfg.sot_token, device=rep.device)
            rows = generate(self.prior.gpt, start, rep, temperature=temperature, generator=gen)
            texts = [self.prior.decode(r) for r in rows]
            logps = self._log_prob(rep, texts)
            for i in range(len(images)):
                per_image[i] += list(zip(texts[i * num_samples:(i + 1) * num_samples],
                                         logps[i * num_samples:(i + 1) * num_samples]))
        return [self._rank(e, cands) for e, cands in zip(embs, per_image)]

    def caption(self, images, num_beams: int = 5, num_samples: int = 0, rerank: bool = True,
                temperature: float = 1.0, seed: int | None = 0) -> list[str]:
        """One caption per image: the candidate CLIP likes best (rerank=True, the default: on
        ShapesWorld it names the right shape far more often than the top beam), or the top beam."""
        ranked = self.candidates(images, num_beams, num_samples, temperature, seed)
        key = "clip_similarity" if rerank or self.mapper is None else "log_prob"
        return [max(c, key=lambda r: r[key])["caption"] for c in ranked]

    def log_prob(self, images, texts: list[str], repeats: int = 1) -> list[float]:
        """Mean per-token log p(text | image) under the mapper + prior (texts grouped per image)."""
        return self._log_prob(self.prefix(self.clip.encode_images(images)).repeat_interleave(repeats, dim=0), texts)

    @torch.no_grad()
    def _log_prob(self, prefix: torch.Tensor, texts: list[str]) -> list[float]:
        tokens = self.prior.token_batch(texts, reserve=prefix.shape[1])
        logits = self.prior.gpt(tokens, prefix)[:, -tokens.shape[1]:-1].float().log_softmax(-1)
        picked = logits.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        mask = tokens[:, 1:] != 0
        return ((picked * mask).sum(1) / mask.sum(1)).tolist()

    def _rank(self, image_embed: np.ndarray, cands: list[tuple[str, float]]) -> list[dict]:
        seen = {}
        for text, lp in cands:
            if text.strip() and text not in seen:
                seen[text] = lp
        if not seen:
            return [{"caption": "", "log_prob": float("-inf"), "clip_similarity": 0.0}]
        texts = list(seen)
        sims = self.clip.encode_texts(texts) @ image_embed
        rows = [{"caption": t, "log_prob": float(seen[t]), "clip_similarity": float(s)} for t, s in zip(texts, sims)]
        return sorted(rows, key=lambda r: -r["clip_similarity"])

    def _fallback(self, image_embeds: np.ndarray, top: int) -> list[list[dict]]:
        if self._pool is None:
            texts = sorted(set(t for t in self.prior.sample(self.pool_size, temperature=1.0, seed=0) if t.strip()))
            texts = texts or ["an image"]
            per_token = np.array([lp.mean() for lp in self.prior.token_log_probs(texts)], dtype=np.float32)
            self._pool = (texts, self.clip.encode_texts(texts), per_token)
        texts, emb, per_token = self._pool
        out = []
        for im_emb in image_embeds:
            sims = emb @ im_emb
            best = np.argsort(-sims)[:top]
            out.append([{"caption": texts[j], "log_prob": float(per_token[j]), "clip_similarity": float(sims[j])}
                        for j in best])
        return out
