"""Prior-guided search: prior samples, then `budget` rounds of edits of the best texts so far
(structural edits of a world caption, one-word edits within word groups, and token deletions /
replacements / insertions the prior proposes), completions of the best text's first words, and fresh
samples; ranked by fit-half rho + prior_weight x log p, disfluent texts last."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import world
from ..world.captions import parse_caption
from .problem import DISFLUENT_PENALTY, Explainer, Problem, Settings


@dataclass
class Config:
    n_samples: int = 128       # prior samples to start from (and a quarter as many fresh ones each round)
    n_best: int = 3            # texts edited each round
    max_edits: int = 120       # edits of each, drawn at random
    temperature: float = 1.0   # of the prior's samples


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    gen = torch.Generator(device=ex.space.ids.device).manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    scored: dict[tuple, float] = {}

    def sample(n, prefix=()):
        return ex.space.sample(n, cfg.temperature, gen, prefix=prefix, max_len=ex.max_len)

    def score(new):
        # no fluency floor while searching: an edit of a disfluent text is often the best fluent one
        new = [r for r in dict.fromkeys(new) if r and r not in scored and len(r) <= ex.max_len]
        if new:
            obj, _ = ex.fit_scores(p, new, s.prior_weight, fluency=False)
            scored.update(zip(new, obj.tolist()))
    score(sample(cfg.n_samples))
    for _ in tqdm(range(s.budget), desc="explain: search", disable=not s.progress):
        best = sorted(scored, key=scored.get, reverse=True)[:cfg.n_best]
        new = []
        for r in best:
            e = edits(ex, r)
            new += [e[i] for i in rng.permutation(len(e))[:cfg.max_edits]]
        b = best[0]
        if len(b) > 1:
            new += sample(8, prefix=b[:int(rng.integers(1, len(b)))])
        new += sample(cfg.n_samples // 4)
        score(new)
    rows = list(scored)
    final = np.array([scored[r] for r in rows]) - DISFLUENT_PENALTY * ex.disfluent(rows)
    best = [rows[i] for i in np.argsort(-final, kind="stable")[:max(s.keep, 20)]]
    return ex.finish(p, best, "search", s.prior_weight, s.keep)


def edits(ex: Explainer, row: tuple[int, ...], top: int = 4) -> list[tuple]:
    """Structural edits (for a caption of the world language), one-word edits within word groups,
    and token deletions / replacements / insertions proposed by the prior."""
    out = []
    text = ex.decode(row)
    d = parse_caption(text) if ex.shapes_world else None
    if d is not None:
        out += [ex.ids(t) for t in _structural_edits(d)]
    words = text.split()
    for i, w in enumerate(words):
        for alt in ex.edit_groups.get(w, []):
            out.append(ex.ids(_fix_articles(" ".join(words[:i] + [alt] + words[i + 1:]))))
    nxt = ex.space.next_tokens([row], top)[0]       # per position 0..len(row)
    for i in range(len(row)):
        out.append(row[:i] + row[i + 1:])
        out += [row[:i] + (t,) + row[i + 1:] for t in nxt[i] if t != row[i]]
    for i in range(len(row) + 1):
        out += [row[:i] + (t,) + row[i:] for t in nxt[i][:max(1, top // 2)]]
    return [r for r in out if 0 < len(r) <= ex.tower.context - 2]


def _fix_articles(text: str) -> str:
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return re.sub(r"\ban (?=[^aeiou\W])", "a ", text)


def _structural_edits(d: world.Description) -> list[str]:
    """Captions one step from d: an attribute of a phrase removed, set or changed; a phrase dropped
    (keeping one); the background removed, set or changed."""
    out = []
    phrases = list(d.phrases)
    for i, ph in enumerate(phrases):
        for attr, values in (("colour", world.COLOURS), ("size", world.SIZES), ("position", world.POSITIONS),
                             ("shape", world.SHAPES)):
            for v in ([None] if attr != "shape" else []) + list(values):
                if v != getattr(ph, attr):
                    new = phrases[:i] + [replace(ph, **{attr: v})] + phrases[i + 1:]
                    out.append(replace(d, phrases=tuple(new)))
    if len(phrases) > 1:
        out += [world.Description((ph,), background=d.background) for ph in phrases]
    out += [replace(d, background=b) for b in [None, *world.BACKGROUNDS] if b != d.background]
    texts = []
    for e in out:
        try:
            texts.append(world.caption_text(e))
        except (KeyError, IndexError):
            pass
    return texts

