"""The text side: the bundle CLIP's text tower run on token ids or learned token embeddings
(`TextTower`), the prior's restricted vocabulary (`TokenSpace`), and learned tokens in diffusers'
textual-inversion file format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.caption_prior import KVCache
from ..models.clip import text_tower
from .errors import ExplainError


class TextTower:
    """The bundle CLIP's text tower from token ids or token embeddings (for learned tokens). Sequences
    are trimmed to their longest row: the tower is causal and pools at end-of-text, so the padding
    after it never changes the result (tested against encode_texts)."""

    def __init__(self, clip):
        self.clip = clip
        self.text = text_tower(clip.model)
        if not hasattr(self.text, "transformer") or getattr(self.text, "text_pool_type", "argmax") != "argmax":
            raise ExplainError(f"{clip.model_name}: explain needs open_clip's own text transformer (argmax pooling)")
        self.context = self.text.positional_embedding.shape[0]
        self.embedding = self.text.token_embedding.weight             # (V, W)

    def features(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """x: token embeddings (B, T, W); eot: end-of-text position per row (B,) -> (B, D), L2-normalised."""
        t = self.text
        cast = t.transformer.get_cast_dtype()
        T = x.shape[1]
        h = x.to(cast) + t.positional_embedding[:T].to(cast)
        mask = t.attn_mask[:T, :T] if getattr(t, "attn_mask", None) is not None else None
        h = t.ln_final(t.transformer(h, attn_mask=mask))
        h = h[torch.arange(h.shape[0]), eot]
        proj = t.text_projection
        if proj is not None:
            h = proj(h) if isinstance(proj, torch.nn.Linear) else h @ proj
        return F.normalize(h.float(), dim=-1)

    @torch.no_grad()
    def encode_ids(self, rows: list[tuple[int, ...]], sot: int, eot: int, chunk: int = 512) -> np.ndarray:
        """Token id rows (no SOT/EOT) -> (M, D) float32 text features."""
        out = [np.zeros((0, self.clip.dim), np.float32)]
        for i in range(0, len(rows), chunk):
            part = [(sot,) + tuple(r)[:self.context - 2] + (eot,) for r in rows[i:i + chunk]]
            ids = torch.zeros(len(part), max(map(len, part)), dtype=torch.long)
            for j, r in enumerate(part):
                ids[j, :len(r)] = torch.tensor(r)
            ends = torch.tensor([len(r) - 1 for r in part])
            out.append(self.features(self.text.token_embedding(ids.to(self.embedding.device)), ends).cpu().numpy())
        return np.concatenate(out)


# ----------------------------------------------------------------------------- restricted vocabulary
class TokenSpace:
    """A restricted vocabulary for the prior: the tokens of `phrases` plus the prior's top `top_k` next
    tokens after every prefix of them, and end-of-text. Sampling and scoring there cost ~K/49408 of the
    full output layer."""

    def __init__(self, prior, phrases: list[str], top_k: int = 8):
        self.prior, self.gpt, self.cfg = prior, prior.gpt, prior.cfg
        self.sot, self.eot = self.cfg.sot_token, self.cfg.eot_token
        token_rows = [tuple(prior.encode(p))[:self.cfg.context_length - 2] for p in phrases]
        ids = {t for r in token_rows for t in r} | {self.eot}
        with torch.no_grad():
            for i in range(0, len(token_rows), 64):
                batch = prior.token_batch([prior.decode(list(r)) for r in token_rows[i:i + 64]])
                states = self.gpt.hidden(self.gpt.embed(batch))[batch != 0]        # (n, W): real positions only
                ids |= set(self.gpt.logits(states).topk(top_k, dim=-1).indices.flatten().tolist())
        ids.discard(self.sot)
        ids.discard(0)
        self.ids = torch.tensor(sorted(ids), device=prior.device)             # (K,)
        self.index = {int(t): i for i, t in enumerate(self.ids.tolist())}
        self.embedding = self.gpt.token_embedding.weight[self.ids].detach()   # (K, W) the prior's rows
        self.eot_k = self.index[self.eot]

    def __len__(self) -> int:
        return len(self.ids)

    def logits(self, states: torch.Tensor) -> torch.Tensor:       # (..., W) -> (..., K)
        if self.gpt.lm_head is not None:
            return self.gpt.lm_head(states)[..., self.ids]
        return states @ self.embedding.T

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               prefix: tuple[int, ...] = (), max_len: int = 24) -> list[tuple[int, ...]]:
        """n samples (token ids, no SOT/EOT) from the prior renormalised to this vocabulary."""
        start = torch.tensor([[self.sot, *prefix]] * n, device=self.ids.device)
        cache = KVCache(self.cfg, n, start.device, self.embedding.dtype)
        x = self.gpt.embed(start)
        out = torch.zeros(n, 0, dtype=torch.long, device=start.device)
        done = torch.zeros(n, dtype=torch.bool, device=start.device)
        for _ in range(min(max_len, self.cfg.context_length - start.shape[1] - 1)):
            z = self.logits(self.gpt.hidden(x, cache)[:, -1]).float() / max(temperature, 1e-4)
            k = torch.multinomial(z.softmax(-1), 1, generator=generator).squeeze(1)
            tok = self.ids[k].masked_fill(done, self.eot)
            out = torch.cat([out, tok[:, None]], 1)
            done |= tok == self.eot
            if done.all():
                break
            x = self.gpt.embed(tok[:, None])
        rows = []
        for r in out.tolist():
            r = r[:r.index(self.eot)] if self.eot in r else r
            rows.append(tuple(prefix) + tuple(r))
        return rows

    @torch.no_grad()
    def token_log_probs(self, rows: list[tuple[int, ...]], chunk: int = 512) -> list[np.ndarray]:
        """log p of every token (end-of-text included) in this vocabulary, per row. A row with a token
        outside it is scored with the full vocabulary."""
        out = []
        for i in range(0, len(rows), chunk):
            part = [(self.sot,) + tuple(r)[:self.cfg.context_length - 2] + (self.eot,) for r in rows[i:i + chunk]]
            ids = self._padded(part)
            states = self.gpt.hidden(self.gpt.embed(ids))[:, :-1]                 # (B, T-1, W)
            logp = self.logits(states).float().log_softmax(-1)                    # (B, T-1, K)
            for j, r in enumerate(part):
                n = len(r) - 1
                if all(t in self.index for t in r[1:]):
                    k = torch.tensor([self.index[t] for t in r[1:]], device=logp.device)
                    out.append(logp[j, torch.arange(n), k].cpu().numpy())
                else:
                    full = self.gpt.logits(states[j, :n]).float().log_softmax(-1)
                    out.append(full[torch.arange(n), torch.tensor(r[1:])].cpu().numpy())
        return out

    def _padded(self, part: list[tuple[int, ...]]) -> torch.Tensor:       # -> (B, T) ids, 0 after each row
        ids = torch.zeros(len(part), max(map(len, part)), dtype=torch.long, device=self.ids.device)
        for j, r in enumerate(part):
            ids[j, :len(r)] = torch.tensor(r)
        return ids

    def row_log_probs(self, rows: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log p of each token of each row, end-of-text included, and its (B, T) mask; rows in this
        vocabulary (as sample() draws them). Differentiable in the prior's weights: rl fine-tunes a copy."""
        part = [(self.sot,) + tuple(r) + (self.eot,) for r in rows]
        ids = self._padded(part)
        logp = self.logits(self.gpt.hidden(self.gpt.embed(ids))[:, :-1]).float().log_softmax(-1)   # (B, T, K)
        target = torch.tensor([[self.index.get(int(t), 0) for t in row] for row in ids[:, 1:].tolist()],
                              device=logp.device)                                               # (B, T)
        mask = torch.arange(ids.shape[1] - 1, device=logp.device)[None] < torch.tensor([len(r) - 1 for r in part],
                                                                                      device=logp.device)[:, None]
        return logp.gather(-1, target[..., None])[..., 0] * mask, mask

    def log_probs(self, rows: list[tuple[int, ...]], chunk: int = 512) -> np.ndarray:
        """Mean log p per token (end-of-text included) in this vocabulary: (M,)."""
        return np.array([lp.mean() for lp in self.token_log_probs(rows, chunk)])

    @torch.no_grad()
    def next_tokens(self, rows: list[tuple[int, ...]], top: int) -> list[list[list[int]]]:
        """For each row and each position 0..len: the prior's `top` likeliest next tokens there."""
        part = [(self.sot,) + tuple(r) for r in rows]
        ids = self._padded(part)
        z = self.logits(self.gpt.hidden(self.gpt.embed(ids)))                     # (B, T, K)
        z[..., self.eot_k] = float("-inf")
        best = self.ids[z.topk(min(top, len(self) - 1), dim=-1).indices].tolist()
        return [best[j][:len(r)] for j, r in enumerate(part)]


def with_prefixes(rows) -> list[tuple]:
    """The rows and all their non-empty prefixes ("a red cross, a" -> also "a red cross", ...)."""
    return list(dict.fromkeys(r[:i] for r in rows for i in range(len(r), 0, -1)))


def save_learned_embeds(path: str | Path, token: str, vectors: torch.Tensor) -> Path:
    """diffusers' textual-inversion format: {token: (n_vectors, width)} in learned_embeds.safetensors
    (what pipe.load_textual_inversion and Renderer.load_tokens read)."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = torch.as_tensor(vectors).detach().float().cpu()
    save_file({token: v.reshape(-1, v.shape[-1]).contiguous()}, str(path), metadata={"format": "pt"})
    return path


def load_learned_embeds(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))

