"""GPT-2 (transformers' GPT2LMHeadModel) as a decoder the captioner drives: ClipCap's published captioners.

A decoder is what `Captioner`, `beam_search` (captioner.py) and `generate` (caption_prior.py) use, and the built-in
one (a CaptionPrior copy) and `Gpt2Decoder` both provide it:

    decoder.gpt.embed(tokens (B, T)) -> (B, T, W)          token embeddings
    decoder.gpt.hidden(x (B, T, W), cache | None) -> (B, T, W)  final-norm states; with a cache, after what it holds
    decoder.gpt.logits(states (..., W)) -> (..., V)
    decoder.gpt.write_logits(states (..., W)) -> (..., V)   what decoding reads: -inf at tokens it never writes
    decoder.gpt.new_cache(batch, device, dtype)           a cache with .length and .reorder(index) (beams, and rows
                                                          that finished leaving the batch)
    decoder.cfg.context_length, .eot_token, .sot_token    sot_token None: decoding starts right after the prefix
    decoder.device, decoder.decode(ids) -> str
    decoder.mean_log_probs(texts, prefix (N, L, W), groups) -> [mean log p per token of each text and its end]
    decoder.beam_by_mean (optional, default False): beam search ranks beams by their mean log p per token while it
                                                          searches (ClipCap's generate_beam), not by their sum

GPT-2 runs on transformers' own forward and KV cache (a DynamicCache, reordered with its reorder_cache). ClipCap
has no start token: the prefix embeddings go in as inputs_embeds and GPT-2 continues them; a caption ends at its
stop token "." (its end-of-text here), which ClipCap keeps in the caption's text, so `decode` writes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, GPT2LMHeadModel, GPT2Tokenizer

from ..errors import BundleError, InputError

FOLDER = "gpt2"                 # inside a captioner folder: config.json, model.safetensors and the tokenizer
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclass
class Gpt2DecoderConfig:
    context_length: int          # prefix length + the most new tokens (ClipCap: 10 + 67)
    eot_token: int               # ClipCap: the "." token, which ends a caption
    sot_token: int | None = None  # none: GPT-2 continues the prefix
    width: int = 768


class Gpt2Cache:
    """transformers' DynamicCache behind the project's cache protocol (.length, .reorder)."""

    def __init__(self):
        self.past = DynamicCache()
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        self.past.reorder_cache(index)          # index_select of every layer's keys and values


class Gpt2LM(nn.Module):
    """GPT2LMHeadModel's forward behind embed / hidden / logits / new_cache."""

    def __init__(self, model: GPT2LMHeadModel, cfg: Gpt2DecoderConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.wte(tokens)

    def new_cache(self, batch: int, device, dtype) -> Gpt2Cache:
        return Gpt2Cache()

    def hidden(self, x: torch.Tensor, cache: Gpt2Cache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        if start + x.shape[1] > self.cfg.context_length:
            raise InputError(f"sequence of {start + x.shape[1]} tokens exceeds the context of {self.cfg.context_length}")
        out = self.model.transformer(inputs_embeds=x, past_key_values=None if cache is None else cache.past,
                                     use_cache=cache is not None)
        if cache is not None:
            cache.length = start + x.shape[1]
        return out.last_hidden_state

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(states)

    write_logits = logits         # GPT-2 writes any of its tokens


class Gpt2Decoder:
    """GPT-2 and its tokenizer continuing `prefix_length` prefix embeddings for at most `max_new_tokens` tokens,
    a caption ending at `stop` (ClipCap: "." and 67)."""
    beam_by_mean = True          # ClipCap's generate_beam ranks beams by mean log p per token as it searches

    def __init__(self, model: GPT2LMHeadModel, tokenizer, prefix_length: int, max_new_tokens: int = 67,
                 stop: str = ".", device: str = "cpu"):
        ids = tokenizer.encode(stop)
        if len(ids) != 1:
            raise BundleError(f"the stop text {stop!r} is {len(ids)} tokens for this tokenizer; expected one")
        self.tokenizer, self.prefix_length, self.max_new_tokens, self.stop = tokenizer, prefix_length, max_new_tokens, stop
        self.cfg = Gpt2DecoderConfig(prefix_length + max_new_tokens, ids[0], None, model.config.n_embd)
        if self.cfg.context_length > model.config.n_positions:
            raise BundleError(f"{prefix_length} prefix positions + {max_new_tokens} tokens exceed GPT-2's "
                              f"{model.config.n_positions} positions")
        self.gpt = Gpt2LM(model, self.cfg).to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.gpt.model.transformer.wte.weight.device

    # -- text <-> tokens ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        """The caption's text with its stop token ("a dog on a couch."), as ClipCap writes it."""
        return self.tokenizer.decode(list(ids) + [self.cfg.eot_token]).strip()

    def token_rows(self, texts: list[str]) -> list[list[int]]:
        """Each text's tokens ending in the stop token (added unless the text ends with it), cut to the context."""
        eot, rows = self.cfg.eot_token, []
        for t in texts:
            ids = self.encode(" ".join(str(t).split()))
            if ids and ids[-1] == eot:
                ids = ids[:-1]
            rows.append(ids[:self.max_new_tokens - 1] + [eot])
        return rows

    # -- log-probabilities --------------------------------------------------------------------
    @torch.no_grad()
    def token_log_probs(self, texts: list[str], prefix_embeds: torch.Tensor, chunk: int = 256) -> list[np.ndarray]:
        """log p(token | prefix, preceding tokens) of each text's tokens and its stop token (token_rows): the first
        token is read at the prefix's last position (ClipCap's training loss)."""
        rows = self.token_rows(texts)
        if not rows:
            return []
        n, t, length = len(rows), max(map(len, rows)), prefix_embeds.shape[1]
        tokens = torch.full((n, t), self.cfg.eot_token, dtype=torch.long, device=self.device)   # right padding
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = torch.tensor(r)
        x = torch.cat([prefix_embeds.to(self.device), self.gpt.embed(tokens)], dim=1)
        states = self.gpt.hidden(x)[:, length - 1:length - 1 + t]                 # (N, T, W): the state before each
        keep = torch.arange(t, device=self.device)[None] < torch.tensor([len(r) for r in rows], device=self.device)[:, None]
        wanted, targets = states[keep], tokens[keep]                               # (M, W), (M,)
        picked = torch.cat([self.gpt.logits(wanted[i:i + chunk]).float().log_softmax(-1)
                            .gather(1, targets[i:i + chunk, None])[:, 0] for i in range(0, len(targets), chunk)])
        return [p.cpu().numpy() for p in picked.split([len(r) for r in rows])]

    def mean_log_probs(self, texts: list[str], prefix_embeds: torch.Tensor, groups: list | None = None) -> list[float]:
        """Mean log p per token of each text and its stop token after its prefix (groups: unused here)."""
        return [float(p.mean()) for p in self.token_log_probs(texts, prefix_embeds)]

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """GPT-2 (config.json + model.safetensors) and its tokenizer in directory/gpt2/."""
        folder = Path(directory) / FOLDER
        self.gpt.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        return folder

    @classmethod
    def load(cls, directory: str | Path, prefix_length: int, max_new_tokens: int = 67, stop: str = ".",
             device: str = "cpu") -> "Gpt2Decoder":
        folder = Path(directory) / FOLDER
        missing = [f for f in ("config.json", "model.safetensors", *TOKENIZER_FILES) if not (folder / f).is_file()]
        if missing:
            raise BundleError(f"{folder} lacks {', '.join(missing)}: expected GPT-2 as written by "
                              f"`clipgpt convert clipcap` (config.json, model.safetensors, vocab.json, merges.txt)")
        model = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
        return cls(model, GPT2Tokenizer.from_pretrained(folder), prefix_length, max_new_tokens, stop, device)
