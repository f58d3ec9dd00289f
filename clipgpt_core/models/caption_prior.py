"""The caption prior (seed 000's CLIP GPT): a causal language model over CLIP BPE tokens.

Initialised from a CLIP text tower: open_clip's text transformer is already causally masked,
so its token and position embeddings, blocks and final norm become a GPT; the output head is
tied to the token embedding (or a fresh Linear). Sampling keeps a KV cache, runs a batch of
samples at once and stops each sample at end-of-text.

    prior = CaptionPrior.from_clip(bundle.clip)          # before training: CLIP's own text tower
    prior.sample(4, temperature=0.8, prefix="a red")      # -> list[str]
    prior.log_prob(["a red circle"])                       # -> np.ndarray (N,)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ..batching import batched
from .clip import SHARED_BATCH_MAX, text_tower  # importing clip registers our open_clip configs (the tokenizer is named by model)
from .component import load_component, save_component
from ..errors import BundleError, InputError

CONFIG_FILE = "prior_config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_PREFIX_CHARS = 300


@dataclass
class PriorConfig:
    vocab_size: int = 49408
    context_length: int = 32
    width: int = 128
    heads: int = 4
    layers: int = 3
    mlp_ratio: float = 4.0
    act: str = "gelu"          # "quick_gelu" for OpenAI-trained CLIP towers
    tie_head: bool = True      # logits = hidden @ token_embedding.T (no extra 6M-parameter matrix)
    head_bias: bool = False    # an untied head with a bias (seed 000's published clip_gpt.pt: its `deembed`)
    sot_token: int = 49406
    eot_token: int = 49407
    tokenizer: str = "shapes-clip"   # an open_clip model name whose tokenizer to use
    # the token ids it writes: its training texts' (restrict_writes); empty = all V. Decoding and scoring then read
    # only those rows of the head: the 49408-way head was most of a caption's CPU (docs/results.md)
    writes: list = field(default_factory=list)


class KVCache:
    """Pre-allocated keys/values: (layers, B, heads, context, head_dim) each."""

    def __init__(self, cfg: PriorConfig, batch: int, device, dtype):
        shape = (cfg.layers, batch, cfg.heads, cfg.context_length, cfg.width // cfg.heads)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:   # for beam search
        self.k, self.v = self.k[:, index], self.v[:, index]


class CaptionGPT(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        act = open_clip.transformer.QuickGELU if cfg.act == "quick_gelu" else nn.GELU
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width).normal_(std=0.01))
        self.transformer = open_clip.transformer.Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act_layer=act)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.lm_head = None if cfg.tie_head else nn.Linear(cfg.width, cfg.vocab_size, bias=cfg.head_bias)
        self.register_buffer("writes", None, persistent=False)
        self.restrict_writes(cfg.writes)

    def restrict_writes(self, ids) -> None:
        """Write only these token ids from now on (end-of-text is always one); empty: every token."""
        ids = sorted(set(int(i) for i in ids) | {self.cfg.eot_token}) if len(ids) else []
        self.cfg.writes = ids
        device = self.positional_embedding.device
        self.writes = torch.tensor(ids, dtype=torch.long, device=device) if ids else None

    @classmethod
    def from_clip(cls, clip_model: nn.Module, tokenizer_name: str, tie_head: bool = True) -> "CaptionGPT":
        """Copy the CLIP text tower (embeddings, blocks, final norm) into a GPT."""
        text = text_tower(clip_model)
        blocks = text.transformer.resblocks
        mlp = blocks[0].mlp
        cfg = PriorConfig(
            vocab_size=text.token_embedding.num_embeddings, context_length=text.positional_embedding.shape[0],
            width=text.transformer.width, heads=blocks[0].attn.num_heads, layers=len(blocks),
            mlp_ratio=mlp.c_fc.out_features / mlp.c_fc.in_features,
            act="quick_gelu" if isinstance(mlp.gelu, open_clip.transformer.QuickGELU) else "gelu",
            tie_head=tie_head, tokenizer=tokenizer_name)
        gpt = cls(cfg)
        gpt.token_embedding.load_state_dict(text.token_embedding.state_dict())
        gpt.positional_embedding.data.copy_(text.positional_embedding.data)
        gpt.transformer.load_state_dict(text.transformer.state_dict())
        gpt.ln_final.load_state_dict(text.ln_final.state_dict())
        return gpt

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:    # (B, T) -> (B, T, W)
        return self.token_embedding(tokens)

    def new_cache(self, batch: int, device, dtype) -> KVCache:
        """An empty cache for hidden(): what generate() and beam search decode with (a decoder's own kind)."""
        return KVCache(self.cfg, batch, device, dtype)

    def hidden(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """x: input embeddings (B, T, W) at positions cache.length.. -> final-norm states (B, T, W)."""
        b, t, w = x.shape
        start = cache.length if cache is not None else 0
        if start + t > self.cfg.context_length:
            raise InputError(f"sequence of {start + t} tokens exceeds the context of {self.cfg.context_length}")
        x = x + self.positional_embedding[start:start + t]
        h, hd = self.cfg.heads, w // self.cfg.heads
        # query i may see keys 0..start+i (causal, offset by what the cache already holds)
        mask = None if t == 1 else torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
        for i, blk in enumerate(self.transformer.resblocks):
            q, k, v = F.linear(blk.ln_1(x), blk.attn.in_proj_weight, blk.attn.in_proj_bias).split(w, dim=-1)
            q, k, v = (z.view(b, t, h, hd).transpose(1, 2) for z in (q, k, v))   # (B, H, T, hd)
            if cache is not None:
                cache.k[i, :, :, start:start + t] = k
                cache.v[i, :, :, start:start + t] = v
                k, v = cache.k[i, :, :, :start + t], cache.v[i, :, :, :start + t]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            y = F.linear(y.transpose(1, 2).reshape(b, t, w), blk.attn.out_proj.weight, blk.attn.out_proj.bias)
            x = x + blk.ls_1(y)
            x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        if cache is not None:
            cache.length = start + t
        return self.ln_final(x)

    def logits(self, states: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(..., W) -> (..., V), or (..., len(ids)): the head's columns `ids` only."""
        if self.lm_head is None:
            return states @ (self.token_embedding.weight if ids is None else self.token_embedding.weight[ids]).T
        if ids is None:
            return self.lm_head(states)
        bias = None if self.lm_head.bias is None else self.lm_head.bias[ids]
        return F.linear(states, self.lm_head.weight[ids], bias)

    def write_logits(self, states: torch.Tensor) -> torch.Tensor:                  # (..., W) -> (..., V)
        """The logits decoding reads: -inf at every token it does not write (cfg.writes)."""
        if self.writes is None:
            return self.logits(states)
        out = states.new_full((*states.shape[:-1], self.cfg.vocab_size), float("-inf"))
        out[..., self.writes] = self.logits(states, self.writes)
        return out

    def forward(self, tokens: torch.Tensor, prefix_embeds: torch.Tensor | None = None,
                loss: bool = False) -> torch.Tensor:
        """tokens (B, T) [, prefix (B, L, W)] -> next-token logits (B, L + T, V); or, with loss=True,
        the mean cross-entropy of tokens[:, 1:] (0 = padding after end-of-text)."""
        if loss:
            return -self.target_log_probs(tokens, prefix_embeds).sum() / (tokens[:, 1:] != 0).sum()
        return self.logits(self.hidden(self._inputs(tokens, prefix_embeds)))

    def target_log_probs(self, tokens: torch.Tensor, prefix_embeds: torch.Tensor | None = None,
                         groups: list | None = None, chunk: int = 64) -> torch.Tensor:
        """log p(tokens[:, 1:] | what precedes) -> (B, T-1), 0 where the target is padding (0).

        The 49408-way head is most of the cost, so logits are made only where there is a target (not at the
        padding of shorter rows), and once per distinct context: rows in the same group (the same prefix
        embeddings; without them, all rows) that begin with the same tokens share the next-token distribution
        there (a caption's one-word edits share everything before the edit). `chunk` contexts at a time: torch's
        fused log_softmax on a small chunk was ~4x faster here than logsumexp, which makes full-size temporaries.
        In eval mode, over the tokens it writes when every target is one of them (a text with another token, a
        user's, is scored over all V); training reads the whole head."""
        states = self.hidden(self._inputs(tokens, prefix_embeds))[:, -tokens.shape[1]:-1]   # (B, T-1, W)
        targets = tokens[:, 1:]
        keep = targets != 0
        if groups is None:
            groups = [0] * len(tokens) if prefix_embeds is None else list(range(len(tokens)))
        where, first = [], {}                   # per target: its context's index; context -> its first (row, pos)
        for r, row in enumerate(tokens.tolist()):
            for j in range(len(row) - 1):
                if row[j + 1] != 0:
                    where.append(first.setdefault((groups[r], tuple(row[:j + 1])), (len(first), r, j))[0])
        rows, cols = zip(*[(r, j) for _, r, j in first.values()]) if first else ((), ())
        unique = states[list(rows), list(cols)]                                              # (U, W)
        picked = targets[keep]                                                              # (M,)
        where = torch.tensor(where, dtype=torch.long, device=tokens.device)
        head = self.logits if self.training or self.writes is None or not torch.isin(picked, self.writes).all() \
            else self.write_logits
        at, values = [torch.zeros(0, dtype=torch.long, device=tokens.device)], [torch.zeros(0, device=tokens.device)]
        for i in range(0, len(unique), chunk):
            z = head(unique[i:i + chunk]).float().log_softmax(-1)                            # (u, V)
            mine = (where >= i) & (where < i + chunk)
            at.append(mine.nonzero().squeeze(1))
            values.append(z[where[mine] - i, picked[mine]])
        flat = torch.zeros(len(picked), dtype=torch.float32, device=tokens.device).index_put((torch.cat(at),),
                                                                                             torch.cat(values))
        out = torch.zeros(targets.shape, dtype=torch.float32, device=tokens.device)
        return out.masked_scatter(keep, flat)

    def _inputs(self, tokens: torch.Tensor, prefix_embeds: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(tokens)                                                               # (B, T, W)
        return x if prefix_embeds is None else torch.cat([prefix_embeds.to(x.dtype), x], dim=1)

def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p          # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


Generators = torch.Generator | list[tuple[int, torch.Generator]] | None   # one, or one per run of rows


def _sample(logits: torch.Tensor, generator: Generators, rows: torch.Tensor | None = None,
            total: int | None = None) -> torch.Tensor:
    """One token per row by inverting the CDF: (B, V) logits -> (B,). torch.multinomial draws an
    exponential per vocabulary entry (49408 per row); this draws one uniform per row, and on a
    CPU it was the larger part of a cached decoding step. rows: which of `total` rows these are (the rest
    finished): every row still draws its uniform, so each row's draws are the same however many others run."""
    # softmax, not exp(logits - max): torch's plain exp takes a slow path on the many entries that
    # underflow (10x slower here); u is scaled by the last entry, so rounding never overshoots
    # float64 running sum: in float32 its rounding over 49408 entries (~1e-5) would decide some
    # draws, so cached and uncached decoding (logits equal to ~1e-7) could pick different tokens
    cdf = logits.softmax(-1).double().cumsum_(-1)                                 # (B, V)
    total = cdf.shape[0] if total is None else total
    if isinstance(generator, list):      # rows of several callers, each drawing from its own seeded generator
        u = torch.cat([torch.rand(k, 1, generator=g, device=cdf.device, dtype=cdf.dtype) for k, g in generator])
    else:
        u = torch.rand(total, 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    if rows is not None:
        u = u[rows]
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_(max=cdf.shape[1] - 1).squeeze(1)


@torch.no_grad()
def generate(gpt: CaptionGPT, start: torch.Tensor, prefix_embeds: torch.Tensor | None = None,
             max_new_tokens: int | None = None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float = 1.0, generator: Generators = None, use_cache: bool = True) -> list[list[int]]:
    """Sample continuations of start (B, T0) [after prefix embeddings (B, L, W)] until end-of-text. T0 may be 0
    after a prefix (a decoder with no start token, e.g. ClipCap's GPT-2). gpt: a CaptionGPT, or any decoder with
    its cfg (context_length, eot_token), embed, hidden(x, cache), write_logits and new_cache (gpt2_decoder.Gpt2LM).
    generator: one for all rows, or [(k, generator), ...] for runs of k rows in order (callers batched together:
    each run draws what it would alone, one uniform per row per step).

    A row that reaches end-of-text leaves the batch (its cache rows too): rows of a batch end at very different
    lengths, and the 49408-way head is most of a step. temperature 0 = greedy. use_cache=False re-runs the whole
    sequence every step (the seed's clip_gpt did this); it exists to be compared with, and must give the same
    tokens."""
    cfg = gpt.cfg
    b = start.shape[0]
    used = start.shape[1] + (prefix_embeds.shape[1] if prefix_embeds is not None else 0)
    max_new = min(max_new_tokens or cfg.context_length, cfg.context_length - used)
    if max_new <= 0:
        raise InputError(f"the prefix already fills the context of {cfg.context_length} tokens")
    x = gpt.embed(start)
    if prefix_embeds is not None:
        x = torch.cat([prefix_embeds.to(x.dtype), x], dim=1)
    cache = gpt.new_cache(b, x.device, x.dtype) if use_cache else None
    out: list[list[int]] = [[] for _ in range(b)]
    live = torch.arange(b, device=start.device)                                  # rows still decoding
    for _ in range(max_new):
        logits = gpt.write_logits(gpt.hidden(x, cache)[:, -1]).float()           # (A, V), A = len(live)
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            nxt = _sample(_filter_logits(logits / temperature, top_k, top_p), generator, live, b)
        for row, token in zip(live.tolist(), nxt.tolist()):
            out[row].append(token)
        going = nxt != cfg.eot_token
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            live, nxt = live[keep], nxt[keep]
            if cache is not None:
                cache.reorder(keep)
            else:
                x = x[keep]
        step = gpt.embed(nxt[:, None])
        x = step if use_cache else torch.cat([x, step], dim=1)
    return [until_eot(row, cfg.eot_token) for row in out]


def until_eot(ids: list[int], eot: int) -> list[int]:
    return ids[:ids.index(eot)] if eot in ids else ids


class CaptionPrior:
    """The public face of the prior: text in, text (or log-probabilities) out."""

    def __init__(self, gpt: CaptionGPT, device: str = "cpu"):
        self.gpt = gpt.to(device).eval()
        self.cfg = gpt.cfg
        self.tokenizer = open_clip.get_tokenizer(self.cfg.tokenizer)
        if not hasattr(self.tokenizer, "encode"):
            raise BundleError(f"the prior needs a BPE tokenizer with encode/decode; {self.cfg.tokenizer} has "
                             f"{type(self.tokenizer).__name__}")

    @classmethod
    def from_clip(cls, clip, tie_head: bool = True) -> "CaptionPrior":
        return cls(CaptionGPT.from_clip(clip.model, clip.model_name, tie_head), str(clip.device))

    @property
    def device(self) -> torch.device:
        return self.gpt.positional_embedding.device

    # -- text <-> tokens ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        # CLIP's BPE decodes punctuation as separate words ("star , a"); join it back
        return re.sub(r" ([,.!?;:])", r"\1", self.tokenizer.decode(ids)).strip()

    def token_ids(self, texts) -> list[int]:
        """The token ids `texts` use, end-of-text included: what a prior trained on them writes (restrict_writes)."""
        return sorted({t for text in texts for t in self.encode(text)} | {self.cfg.eot_token})

    def token_batch(self, texts: list[str], reserve: int = 0) -> torch.Tensor:
        """[SOT] ids [EOT] 0... -> (N, T) trimmed to the longest; texts longer than the context
        (less `reserve` positions for prefix embeddings) are cut, keeping EOT."""
        n = self.cfg.context_length - reserve
        rows = [([self.cfg.sot_token] + self.encode(t))[:n - 1] + [self.cfg.eot_token] for t in texts]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out.to(self.device)

    # -- public API -----------------------------------------------------------------------
    def sample(self, n: int = 1, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
               prefix: str = "", seed: int | None = None, use_cache: bool = True) -> list[str]:
        if not 1 <= n <= 1000:
            raise InputError(f"n must be between 1 and 1000, got {n}")
        if temperature < 0 or not 0 < top_p <= 1 or (top_k is not None and top_k < 0):
            raise InputError("temperature must be >= 0, top_p in (0, 1], top_k >= 0")
        prefix = " ".join(str(prefix).split())[:MAX_PREFIX_CHARS]
        ids = [self.cfg.sot_token] + (self.encode(prefix) if prefix else [])
        if len(ids) >= self.cfg.context_length:
            raise InputError(f"the prefix is too long: {len(ids)} tokens, the context holds {self.cfg.context_length}")
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
        key = (tuple(ids), float(temperature), top_k or None, float(top_p), use_cache)
        if n > SHARED_BATCH_MAX:
            rows = self._generate([gen] * n, key)
        else:     # callers with the same prefix and settings share decoding passes, each with its own generator
            rows = batched(self, "sample", self._generate)([gen] * n, key)
        return [self.decode(ids[1:] + r) for r in rows]

    def _generate(self, gens: list[torch.Generator], key: tuple) -> list[list[int]]:
        """One row per entry of gens (runs of one generator: one caller's rows) -> token lists."""
        ids, temperature, top_k, top_p, use_cache = key
        runs: list[list] = []                                    # [[k, generator], ...] in row order
        for g in gens:
            if runs and runs[-1][1] is g:
                runs[-1][0] += 1
            else:
                runs.append([1, g])
        start = torch.tensor([list(ids)] * len(gens), device=self.device)
        return generate(self.gpt, start, temperature=temperature, top_k=top_k, top_p=top_p,
                        generator=[(k, g) for k, g in runs], use_cache=use_cache)

    def token_log_probs(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token log p(token | preceding), for each text's tokens and its end-of-text. A few texts (a user's
        samples) share a pass with other threads' (batching.py)."""
        texts = list(texts)
        if len(texts) > SHARED_BATCH_MAX or not texts:
            return self._token_log_probs(texts)
        return batched(self, "log_probs", lambda ts, _: self._token_log_probs(ts))(texts)

    @torch.no_grad()
    def _token_log_probs(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        tokens = self.token_batch(texts)
        picked = self.gpt.target_log_probs(tokens)                                 # (N, T-1)
        lengths = (tokens != 0).sum(1) - 1
        return [picked[i, :lengths[i]].cpu().numpy() for i in range(len(texts))]

    def log_prob(self, texts: list[str]) -> np.ndarray:
        """Total log-probability (nats) of each text, end-of-text included: (N,)."""
        if isinstance(texts, str):
            raise TypeError("log_prob takes a list of strings")
        return np.array([lp.sum() for lp in self.token_log_probs(list(texts))], dtype=np.float32)

    @torch.no_grad()
    def mean_log_probs(self, texts: list[str], prefix_embeds: torch.Tensor | None = None,
                       groups: list | None = None) -> list[float]:
        """Mean log p per token of each text (its tokens and end-of-text) after its prefix embeddings (N, L, W);
        groups: rows that share their prefix (target_log_probs)."""
        tokens = self.token_batch(texts, reserve=0 if prefix_embeds is None else prefix_embeds.shape[1])
        picked = self.gpt.target_log_probs(tokens, prefix_embeds, groups)                  # (N, T-1)
        return (picked.sum(1) / (tokens[:, 1:] != 0).sum(1)).tolist()

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """float16 by default: the prior is mostly its 49408-token embedding, and halving it costs
        nothing measurable in log-probability (tested)."""
        save_component(directory, self.gpt, self.cfg, WEIGHTS_FILE, CONFIG_FILE, dtype)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "CaptionPrior":
        cfg, state = load_component(directory, PriorConfig, WEIGHTS_FILE, CONFIG_FILE)
        gpt = CaptionGPT(cfg)
        gpt.load_state_dict(state)
        return cls(gpt, device)
