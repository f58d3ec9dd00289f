"""Beam search over a caption decoder after prefix embeddings, with a KV cache (the captioner's and CLIP-GPT's)."""
from __future__ import annotations

import torch

from .caption_prior import CaptionPrior, until_eot


def start_tokens(decoder, n: int, device) -> torch.Tensor:
    """(n, 1) start-of-text tokens, or (n, 0) for a decoder without one (it continues the prefix)."""
    sot = decoder.cfg.sot_token
    return torch.full((n, 0 if sot is None else 1), 0 if sot is None else sot, dtype=torch.long, device=device)


@torch.no_grad()
def beam_search(prior: CaptionPrior, prefix_embeds: torch.Tensor, num_beams: int = 3,
                length_penalty: float = 1.0, by_mean: bool = False) -> list[list[tuple[list[int], float]]]:
    """Beam search after prefix embeddings (B, L, W) and start-of-text (if the decoder has one), with a KV cache.
    prior: any decoder (gpt2_decoder.py's protocol). by_mean: keep the beams of best mean log p per token at each
    step (ClipCap's generate_beam), not of best sum.

    -> per image, num_beams (token ids, score) best first; score = sum log p / length**length_penalty."""
    gpt, cfg = prior.gpt, prior.cfg
    b, k, eot = prefix_embeds.shape[0], num_beams, cfg.eot_token
    x = torch.cat([prefix_embeds, gpt.embed(start_tokens(prior, b, prefix_embeds.device))], dim=1)
    x = x.repeat_interleave(k, dim=0)                                                    # (B*K, L[+1], W)
    cache = gpt.new_cache(b * k, x.device, x.dtype)
    scores = torch.full((b, k), float("-inf"), device=x.device)
    scores[:, 0] = 0.0                                        # all beams start equal: expand beam 0 only
    seqs = torch.zeros(b * k, 0, dtype=torch.long, device=x.device)
    lengths = torch.zeros(b * k, device=x.device)
    done = torch.zeros(b * k, dtype=torch.bool, device=x.device)
    for _ in range(cfg.context_length - x.shape[1]):
        logp = gpt.write_logits(gpt.hidden(x, cache)[:, -1]).float().log_softmax(-1)     # (B*K, V)
        # a finished beam only extends with padding, at no cost
        logp[done] = float("-inf")
        logp[done, 0] = 0.0
        total = (scores.view(-1, 1) + logp).view(b, -1)                                  # (B, K*V)
        if by_mean:                 # a finished beam's length stays: its mean stays
            grown = (lengths + (~done).float()).view(-1, 1).expand_as(logp).reshape(b, -1)
            flat = (total / grown).topk(k, dim=1).indices
            scores = total.gather(1, flat)
        else:
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
        rows = [(until_eot(seqs[i * k + j].tolist(), eot), float(normed[i, j])) for j in range(k)]
        out.append(sorted(rows, key=lambda r: -r[1]))
    return out
