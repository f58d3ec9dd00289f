"""Explain a function of images with text (seed 000): find t and a monotone h with
f(im) ~= h(CLIP_t(im)), where CLIP_t(im) = cos(CLIP_image(im), CLIP_text(t)), preferring text the
caption prior finds likely.

    from clipgpt_core import explain, load_bundle
    ranked = explain(load_bundle(), images, scores, method="search")   # -> list[Explanation], best first
    ranked[0].text, ranked[0].spearman, ranked[0].r2, ranked[0].log_prior

CLIP_t is centred: cos(image, t) - cos(image, u), where u is the unit mean of the concept list's text
embeddings (a generic caption). Raw cosine has a component that every caption shares and that varies
from image to image (in ShapesWorld it falls with the number of objects), so the raw-cosine "explanation"
of "has a red object" is a long caption that also tracks crowding; centring compares t with a generic
caption, as zero-shot classification compares it with other texts (centre=False gives raw cosine).
On the benchmark's concept list, centring lifts held-out rho of the best concept from 0.11 to 0.52.
Raw cosine is still the better score for some functions (the shipped classifier's "white" and "black"
logits: the share of the image an object fills is what they read). centre="auto" (the default) picks,
per problem, whichever of the two lets the best concept of the concept list fit the fit half better
(one matrix product each; the held-out half is not looked at).

The images are embedded once and split into a fit half and a held-out half (fixed seed). A text is
scored on the fit half by Spearman's rho between f and CLIP_t, plus prior_weight x its log-prob
under the caption prior (total, so the prior also asks for short texts); h is an isotonic regression
of f on CLIP_t fitted on the fit half (increasing or decreasing, whichever fits); every reported figure
is on the held-out half. For the methods that write text from the prior (search, gumbel), a text with
a token the prior finds less likely than FLUENCY_FLOOR ranks after every fluent text: that stops word
salad such as "a large small in the center", which a larger prior_weight stopped only by also pushing
towards short texts (and lower recovery).

Methods
  dissect    CLIP-Dissect's SoftWPMI ranking of a concept list (the baseline)
  search     prior-guided search: prior samples, then one-token and structural edits of the best
  inversion  textual inversion: k learned token embeddings in the CLIP text tower, trained with Adam
             on a Pearson loss; read out as the nearest vocabulary tokens; saved in diffusers' format
  gumbel     seed 000's proposal: a straight-through Gumbel-softmax token sequence whose logits are
             the prior's next-token logits plus learned offsets, optimised for fit + prior log-prob

Search, inversion read-out and gumbel work in a restricted vocabulary: the tokens of the concept list
and the prior's top next tokens after every prefix of it (`TokenSpace`), where the prior's
49,408-way output layer shrinks to ~100 rows. Reported log-priors use the full vocabulary.
"""
from __future__ import annotations

import hashlib
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression
from tqdm.auto import tqdm

from . import world
from .captions import parse_caption
from .prior import _text_tower
from .targets import TargetError, check_scores

METHODS = ("search", "dissect", "inversion", "gumbel")
DEFAULT_BUDGET = {"search": 4, "dissect": 0, "inversion": 150, "gumbel": 60}   # rounds / - / steps / steps
DEFAULT_PRIOR_WEIGHT = 0.01
# The fluency floor, in nats per token (the prior's restricted vocabulary). On the built-in prior,
# 200 sampled ShapesWorld captions have no token below about -7; "a large small in the center" has one
# at about -9 and "a large the right" at -11 (full vocabulary; see tests/test_explain.py).
FLUENCY_FLOOR = -8.0
DISFLUENT_PENALTY = 1.0      # subtracted from the objective (rho is at most 1): disfluent texts rank last
MAX_IMAGES = 20_000


@dataclass
class Explanation:
    text: str                      # the explanation (for inversion: the learned tokens read out as words)
    spearman: float                # held-out Spearman rho between f and CLIP_t (signed)
    r2: float                      # held-out R^2 of the isotonic h(CLIP_t) fitted on the fit half
    log_prior: float               # log p(text) under the caption prior, nats, end-of-text included
    method: str
    seconds: float                 # wall time of the explain() call that produced it
    token_file: str | None = None  # inversion: learned_embeds.safetensors (diffusers' format)
    token: str | None = None       # inversion: the learned token's name in that file, e.g. <f-1a2b3c>
    direction: str = "increasing"  # h increases with CLIP_t, or decreases
    spearman_fit: float = 0.0      # on the fit half
    objective: float = 0.0         # the ranking score: fit-half rho + prior_weight x log p
    learned_spearman: float | None = None   # inversion: held-out rho of the learned tokens themselves
    extra: dict = field(default_factory=dict)

    def row(self) -> list:
        return [self.text, round(self.spearman, 3), round(self.r2, 3), round(self.log_prior, 2), self.method]


# ----------------------------------------------------------------------------- statistics
def _standardise(a: np.ndarray, axis=0) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    n = np.linalg.norm(a, axis=axis, keepdims=True)
    return a / np.where(n == 0, 1, n)


def spearman_columns(f_ranks_std: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Spearman rho between f (its standardised ranks, (n,)) and every column of x (n, M) -> (M,).
    CLIP similarities do not tie, so ranking columns by argsort is exact."""
    r = np.empty_like(x, dtype=np.float64)
    order = np.argsort(x, axis=0)
    np.put_along_axis(r, order, np.arange(x.shape[0], dtype=np.float64)[:, None].repeat(x.shape[1], 1), axis=0)
    return f_ranks_std @ _standardise(r)


def spearman_ceiling(f: np.ndarray) -> float:
    """The largest Spearman rho any tie-free x can reach with f (below 1 when f has ties, e.g. a 0/1 f
    with 25% ones caps rho at sqrt(3 p (1-p)) = 0.75)."""
    rf = _standardise(rankdata(f))
    return float(rf @ _standardise(np.arange(len(f), dtype=np.float64)[np.argsort(np.argsort(f, kind="stable"))]))


def monotone_fit(x_fit: np.ndarray, f_fit: np.ndarray, increasing: bool) -> IsotonicRegression:
    """h: the isotonic regression of f on x (clipped outside the fitted range)."""
    return IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x_fit, f_fit)


def r2_score(f: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((f - f.mean()) ** 2).sum())
    return 1.0 - float(((f - pred) ** 2).sum()) / ss if ss > 0 else 0.0


# ----------------------------------------------------------------------------- concepts
def world_concepts() -> list[str]:
    """ShapesWorld words and short phrases (the dissect baseline's concept list)."""
    words = (list(world.COLOURS) + world.SHAPES + list(world.PLURALS.values()) + list(world.SIZES) + world.POSITIONS
             + [f"{b} background" for b in world.BACKGROUNDS])
    phrases = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c in world.COLOURS for s in world.SHAPES]
    phrases += [f"a {z} {s}" for z in world.SIZES for s in world.SHAPES]
    phrases += [f"a {s} in the {p}" for s in world.SHAPES for p in world.POSITIONS]
    phrases += [f"a {s} on a {b} background" for s in world.SHAPES for b in world.BACKGROUNDS]
    phrases += [f"two {world.PLURALS[s]}" for s in world.SHAPES]
    return list(dict.fromkeys(words + phrases))


# ----------------------------------------------------------------------------- text tower on token ids
class TextTower:
    """The bundle CLIP's text tower from token ids or token embeddings (for learned tokens). Sequences
    are trimmed to their longest row: the tower is causal and pools at end-of-text, so the padding
    after it never changes the result (tested against encode_texts)."""

    def __init__(self, clip):
        self.clip = clip
        self.text = _text_tower(clip.model)
        if not hasattr(self.text, "transformer") or getattr(self.text, "text_pool_type", "argmax") != "argmax":
            raise TypeError(f"{clip.model_name}: explain needs open_clip's own text transformer (argmax pooling)")
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
        from .prior import KVCache
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
            ids = torch.zeros(len(part), max(map(len, part)), dtype=torch.long, device=self.ids.device)
            for j, r in enumerate(part):
                ids[j, :len(r)] = torch.tensor(r)
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

    def log_probs(self, rows: list[tuple[int, ...]], chunk: int = 512) -> np.ndarray:
        """Mean log p per token (end-of-text included) in this vocabulary: (M,)."""
        return np.array([lp.mean() for lp in self.token_log_probs(rows, chunk)])

    @torch.no_grad()
    def next_tokens(self, rows: list[tuple[int, ...]], top: int) -> list[list[list[int]]]:
        """For each row and each position 0..len: the prior's `top` likeliest next tokens there."""
        part = [(self.sot,) + tuple(r) for r in rows]
        ids = torch.zeros(len(part), max(map(len, part)), dtype=torch.long, device=self.ids.device)
        for j, r in enumerate(part):
            ids[j, :len(r)] = torch.tensor(r)
        z = self.logits(self.gpt.hidden(self.gpt.embed(ids)))                     # (B, T, K)
        z[..., self.eot_k] = float("-inf")
        best = self.ids[z.topk(min(top, len(self) - 1), dim=-1).indices].tolist()
        return [best[j][:len(r)] for j, r in enumerate(part)]


# ----------------------------------------------------------------------------- the explainer
@dataclass
class Problem:
    """Embedded images, scores and the fit / held-out split."""
    emb: np.ndarray          # (N, D) image embeddings
    f: np.ndarray            # (N,) scores
    fit: np.ndarray          # indices of the fit half
    held: np.ndarray         # indices of the held-out half
    base: np.ndarray         # (N,) cos(image, centre), subtracted from every text's similarity (0: raw cosine)
    centred: bool = True     # whether base is the centre (False: raw cosine, base = 0)

    def sims(self, feats: np.ndarray, idx=None) -> np.ndarray:
        """CLIP_t (centred or raw, as base says) of the images (idx: a subset) for text features (M, D) -> (n, M)."""
        idx = slice(None) if idx is None else idx
        return self.emb[idx] @ feats.T - self.base[idx, None]

    def __post_init__(self):
        self.rf_fit = _standardise(rankdata(self.f[self.fit]))
        self.rf_held = _standardise(rankdata(self.f[self.held]))


class Explainer:
    """The work behind explain() for one bundle; caches its token space and text features."""

    def __init__(self, bundle, concepts: list[str] | None = None):
        if bundle.prior is None:
            raise ValueError(f"bundle {bundle.name} has no caption prior")
        self.bundle, self.clip, self.prior = bundle, bundle.clip, bundle.prior
        self.tower = TextTower(bundle.clip)
        self.shapes_world = (bundle.gallery or {}).get("kind") == "shapesworld" or bundle.name == "shapes"
        self.concepts = concepts or world_concepts()
        phrases = list(self.concepts)
        if self.shapes_world:
            import random
            from .training import world_captions
            phrases += world_captions(random.Random(0), 40, split="any")
        self.space = TokenSpace(self.prior, phrases)
        self.sot, self.eot = self.space.sot, self.space.eot
        self._features: dict[tuple, np.ndarray] = {}
        self._logp: dict[tuple, tuple[float, float]] = {}       # row -> (mean, min) token log p
        mean = self.features([self.ids(c) for c in self.concepts]).mean(0)
        self.centre = mean / np.linalg.norm(mean)                   # (D,) the generic caption direction
        self.edit_groups = getattr(bundle.captioner, "edits", None) or {}
        self.max_len = 20          # tokens: explanations are short
        # how much a decreasing fit (f high where the image does NOT match t) counts against an increasing
        # one when ranking: 0 = explanations say what f responds to (a decreasing fit mostly finds
        # confounds, e.g. "a purple triangle" for the number of circles: one object, so few circles)
        self.decreasing = 0.0
        # texts with a token less likely than this under the prior (restricted vocabulary) rank after
        # every fluent text: it drops word salad ("a large small in the center") without the length
        # penalty a larger prior_weight brings (calibration in FLUENCY_FLOOR's comment)
        self.fluency_floor: float | None = FLUENCY_FLOOR

    # -- text -> ids -> features / prior ---------------------------------------------------------
    def ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.prior.encode(text))[:self.tower.context - 2]

    def decode(self, row: tuple[int, ...]) -> str:
        return self.prior.decode(list(row))

    def features(self, rows: list[tuple]) -> np.ndarray:
        new = list(dict.fromkeys(r for r in rows if r not in self._features))
        if new:
            for r, v in zip(new, self.tower.encode_ids(new, self.sot, self.eot)):
                self._features[r] = v
        return np.stack([self._features[r] for r in rows]) if rows else np.zeros((0, self.clip.dim), np.float32)

    def logp(self, rows: list[tuple]) -> np.ndarray:
        """Total log p (nats, end-of-text included) of each row in the token space."""
        return self.mean_logp(rows) * np.array([len(r) + 1 for r in rows])

    def mean_logp(self, rows: list[tuple]) -> np.ndarray:
        return self._token_stats(rows)[:, 0]

    def min_logp(self, rows: list[tuple]) -> np.ndarray:
        """The least likely token's log p in each row: one word the prior would never put there (as in
        "a large small in the center") makes it low, however short or long the text."""
        return self._token_stats(rows)[:, 1]

    def disfluent(self, rows: list[tuple]) -> np.ndarray:
        """(M,) 1.0 where a row has a token below the fluency floor, else 0.0."""
        if self.fluency_floor is None or not rows:
            return np.zeros(len(rows))
        return (self.min_logp(rows) < self.fluency_floor).astype(np.float64)

    def _token_stats(self, rows: list[tuple]) -> np.ndarray:          # (M, 2): mean and min token log p
        new = list(dict.fromkeys(r for r in rows if r not in self._logp))
        if new:
            for r, lp in zip(new, self.space.token_log_probs(new)):
                self._logp[r] = (float(lp.mean()), float(lp.min()))
        return np.array([self._logp[r] for r in rows], dtype=np.float64).reshape(len(rows), 2)

    # -- problem --------------------------------------------------------------------------------
    def problem(self, images, scores, seed: int, centre: bool | str = True) -> Problem:
        """centre: True (centred CLIP_t), False (raw cosine) or "auto" (see choose_centre)."""
        if isinstance(images, np.ndarray):
            emb = images.astype(np.float32)
            if emb.ndim != 2 or emb.shape[1] != self.clip.dim:
                raise TargetError(f"image embeddings must be (N, {self.clip.dim}), got {emb.shape}")
        else:
            images = list(images)
            if len(images) > MAX_IMAGES:
                raise TargetError(f"{len(images)} images is more than {MAX_IMAGES}; explain a sample")
            f = check_scores(scores, len(images))        # before the (slow) embedding
            emb = self.clip.encode_images(images)
        f = check_scores(scores, len(emb))
        perm = np.random.default_rng(seed).permutation(len(f))
        half = len(f) // 2
        fit, held = np.sort(perm[:half]), np.sort(perm[half:])
        if centre == "auto":
            return self.choose_centre(Problem(emb, f, fit, held, emb @ self.centre, True),
                                      Problem(emb, f, fit, held, np.zeros(len(emb), np.float32), False))
        if not isinstance(centre, (bool, np.bool_)):
            raise ValueError(f'centre must be True, False or "auto", got {centre!r}')
        return Problem(emb, f, fit, held, emb @ self.centre if centre else np.zeros(len(emb), np.float32),
                       bool(centre))

    def choose_centre(self, centred: Problem, raw: Problem) -> Problem:
        """The variant in which the concept list's best text fits the fit half better (ties: centred)."""
        feats = self.features([self.ids(c) for c in self.concepts])
        best = [float(np.nanmax(spearman_columns(p.rf_fit, p.sims(feats, p.fit)))) for p in (centred, raw)]
        return centred if best[0] >= best[1] else raw

    def fit_scores(self, p: Problem, rows: list[tuple], prior_weight: float, neg: float | None = None,
                   fluency: bool = True):
        """-> (objective, rho_fit) for rows: rho on the fit half (a decreasing fit counts x `neg`)
        + prior_weight x log p(text) (total: the prior also prefers short texts)."""
        feats = self.features(rows)
        rho = spearman_columns(p.rf_fit, p.sims(feats, p.fit))
        neg = self.decreasing if neg is None else neg
        fit = np.maximum(rho, -neg * rho)
        penalty = DISFLUENT_PENALTY * self.disfluent(rows) if fluency else 0.0
        return fit + prior_weight * self.logp(rows) - penalty, rho

    def evaluate(self, p: Problem, text: str, feat: np.ndarray, method: str, prior_weight: float,
                 logp: float, neg: float | None = None) -> Explanation:
        """Held-out figures of one text (feat: its CLIP text features (D,)); `objective` is the fit-half
        score, so that choosing among candidates never looks at the held-out half."""
        x = p.sims(feat[None])[:, 0]
        rho_fit = float(spearman_columns(p.rf_fit, x[p.fit][:, None])[0])
        increasing = rho_fit >= 0
        h = monotone_fit(x[p.fit], p.f[p.fit], increasing)
        pred = h.predict(x[p.held])
        rho = float(spearman_columns(p.rf_held, x[p.held][:, None])[0])
        neg = self.decreasing if neg is None else neg
        e = Explanation(text, rho, r2_score(p.f[p.held], pred), 0.0, method, 0.0,
                        direction="increasing" if increasing else "decreasing", spearman_fit=rho_fit,
                        objective=max(rho_fit, -neg * rho_fit) + prior_weight * logp)
        e.extra["spearman_h"] = _spearman_ties(p.f[p.held], pred)
        return e

    def finish(self, p: Problem, rows: list[tuple], method: str, prior_weight: float, keep: int,
               fluency: bool = True) -> list[Explanation]:
        """Held-out figures of candidate rows, ranked by the fit-half objective; exact log-priors.
        fluency=False: no fluency floor (inversion's read-outs are nearest tokens, not captions)."""
        rows = list(dict.fromkeys(rows))
        feats, lps = self.features(rows), self.logp(rows)
        out = [self.evaluate(p, self.decode(r), f, method, prior_weight, lp) for r, f, lp in zip(rows, feats, lps)]
        for e, r, bad in zip(out, rows, self.disfluent(rows)):
            e.extra["ids"] = list(r)
            e.extra["fluent"] = not bad
            e.objective -= DISFLUENT_PENALTY * bad * fluency
        out = sorted(out, key=lambda e: -e.objective)[:keep]
        if out:
            for e, lp in zip(out, self.prior.log_prob([e.text for e in out])):
                e.log_prior = float(lp)
        return out

    # -- methods --------------------------------------------------------------------------------
    def dissect(self, p: Problem, concepts=None, prior_weight=0.0, keep=10, top_frac=0.1, a=10.0, lam=1.0,
                p_start=0.998, p_end=0.97, **_):
        """CLIP-Dissect's SoftWPMI (Oikarinen & Weng 2023, similarity.soft_wpmi) on the fit half. With one
        target, log p(d) is the same soft-membership statistic averaged over all fit images (the
        original averages it over the other neurons of a layer)."""
        concepts = list(dict.fromkeys(concepts or self.concepts))
        rows = [self.ids(c) for c in concepts]
        sims = p.emb[p.fit] @ self.features(rows).T     # (n, M) raw: the softmax over concepts ignores centring
        probs = torch.from_numpy(sims).float().mul(a).softmax(dim=1).numpy()        # softmax over concepts
        k = max(3, int(round(top_frac * len(p.fit))))
        top = np.argsort(-p.f[p.fit], kind="stable")[:k]
        p_in = (p_start - np.arange(k) / k * (p_start - p_end))[:, None]           # (k, 1)
        log_d_e = np.log(1 + p_in * (probs[top] - 1) + 1e-7).sum(0)                 # (M,)
        p_bar = p_in.mean()
        log_d = k * np.log(1 + p_bar * (probs - 1) + 1e-7).mean(0)                  # (M,)
        wpmi = log_d_e - lam * log_d
        order = np.argsort(-wpmi)[:keep]
        out = [self.evaluate(p, concepts[i], self._features[rows[i]], "dissect", prior_weight, 0.0) for i in order]
        for e, i in zip(out, order):
            e.extra["soft_wpmi"] = float(wpmi[i])
        for e, lp in zip(out, self.prior.log_prob([e.text for e in out])):
            e.log_prior = float(lp)
        return out                              # the baseline ranks by SoftWPMI, not by our fit

    def edits(self, row: tuple[int, ...], top: int = 4) -> list[tuple]:
        """Structural edits (for a caption of the world language), one-word edits within word groups,
        and token deletions / replacements / insertions proposed by the prior."""
        out = []
        text = self.decode(row)
        d = parse_caption(text) if self.shapes_world else None
        if d is not None:
            out += [self.ids(t) for t in _structural_edits(d)]
        words = text.split()
        for i, w in enumerate(words):
            for alt in self.edit_groups.get(w, []):
                out.append(self.ids(_fix_articles(" ".join(words[:i] + [alt] + words[i + 1:]))))
        nxt = self.space.next_tokens([row], top)[0]       # per position 0..len(row)
        for i in range(len(row)):
            out.append(row[:i] + row[i + 1:])
            out += [row[:i] + (t,) + row[i + 1:] for t in nxt[i] if t != row[i]]
        for i in range(len(row) + 1):
            out += [row[:i] + (t,) + row[i:] for t in nxt[i][:max(1, top // 2)]]
        return [r for r in out if 0 < len(r) <= self.tower.context - 2]

    def search(self, p: Problem, budget=4, prior_weight=DEFAULT_PRIOR_WEIGHT, seed=0, keep=10, n_samples=128,
               n_best=3, max_edits=120, temperature=1.0, progress=True, **_):
        """Prior samples, then `budget` rounds: edits of the `n_best` best so far (at most `max_edits`
        each, drawn at random), completions of the best text's first words, and fresh samples."""
        gen = torch.Generator(device=self.space.ids.device).manual_seed(seed)
        rng = np.random.default_rng(seed)
        scored: dict[tuple, float] = {}

        def score(new):
            # no fluency floor while searching: an edit of a disfluent text is often the best fluent one
            new = [r for r in dict.fromkeys(new) if r and r not in scored and len(r) <= self.max_len]
            if new:
                obj, _ = self.fit_scores(p, new, prior_weight, fluency=False)
                scored.update(zip(new, obj.tolist()))
        score(self.space.sample(n_samples, temperature, gen, max_len=self.max_len))
        for _ in tqdm(range(budget), desc="explain: search", disable=not progress):
            best = sorted(scored, key=scored.get, reverse=True)[:n_best]
            new = []
            for r in best:
                e = self.edits(r)
                new += [e[i] for i in rng.permutation(len(e))[:max_edits]]
            b = best[0]
            if len(b) > 1:
                new += self.space.sample(8, temperature, gen, prefix=b[:int(rng.integers(1, len(b)))], max_len=self.max_len)
            new += self.space.sample(n_samples // 4, temperature, gen, max_len=self.max_len)
            score(new)
        rows = list(scored)
        final = np.array([scored[r] for r in rows]) - DISFLUENT_PENALTY * self.disfluent(rows)
        best = [rows[i] for i in np.argsort(-final, kind="stable")[:max(keep, 20)]]
        return self.finish(p, best, "search", prior_weight, keep)

    def inversion(self, p: Problem, budget=150, prior_weight=DEFAULT_PRIOR_WEIGHT, seed=0, keep=10, k=2, restarts=16,
                  lr=0.05, out_dir=None, progress=True, **_):
        """k learned vectors after start-of-text ([SOT] v1..vk [EOT]), `restarts` at once, trained with Adam
        to maximise the Pearson correlation of cos(image, text) with f's ranks on the fit half."""
        torch.manual_seed(seed)
        E = self.tower.embedding.detach()                                        # (V, W)
        space_rows = E[self.space.ids]                                            # (K, W) CLIP rows of the space
        init = torch.randint(0, len(self.space), (restarts, k))
        v = space_rows[init].clone().requires_grad_(True)                          # (R, k, W)
        opt = torch.optim.Adam([v], lr=lr)
        img = torch.from_numpy(p.emb[p.fit]).float()                               # (n, D)
        base = torch.from_numpy(p.base[p.fit]).float()                             # (n,)
        target = torch.from_numpy(p.rf_fit).float()                                # (n,) standardised ranks
        sot, eot = E[self.sot], E[self.eot]
        ends = torch.full((restarts,), k + 1)
        for _ in tqdm(range(budget), desc="explain: inversion", disable=not progress):
            x = torch.cat([sot.expand(restarts, 1, -1), v, eot.expand(restarts, 1, -1)], 1)   # (R, k+2, W)
            sims = self.tower.features(x, ends) @ img.T - base                              # (R, n)
            sims = sims - sims.mean(1, keepdim=True)
            pearson = (sims @ target) / sims.norm(dim=1).clamp_min(1e-8)                   # (R,)
            loss = -pearson.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = v.detach()
        # read out: per position the 3 nearest tokens of the space (cosine), every combination
        near = F.normalize(v, dim=-1) @ F.normalize(space_rows, dim=-1).T                 # (R, k, K)
        top = near.topk(3, dim=-1).indices                                                   # (R, k, 3)
        cands: dict[tuple, int] = {}
        for r in range(restarts):
            combos = [()]
            for j in range(k):
                combos = [c + (int(self.space.ids[top[r, j, m]]),) for c in combos for m in range(3)]
            for c in combos:
                for i in range(len(c), 0, -1):
                    cands.setdefault(c[:i], r)
        rows = [c for c in _with_prefixes(cands) if self.eot not in c]
        obj, _ = self.fit_scores(p, rows, prior_weight, fluency=False)
        best = [rows[i] for i in np.argsort(-obj)[:max(keep, 20)]]
        out = self.finish(p, best, "inversion", prior_weight, keep, fluency=False)
        # the learned tokens themselves: held-out rho, and a diffusers learned_embeds file per explanation
        with torch.no_grad():
            x = torch.cat([sot.expand(restarts, 1, -1), v, eot.expand(restarts, 1, -1)], 1)
            learned = self.tower.features(x, ends).numpy()                                  # (R, D)
        out_dir = Path(out_dir or tempfile.mkdtemp(prefix="clipgpt-explain-"))
        for e in out:
            r = cands.get(tuple(e.extra["ids"]), 0)
            ev = self.evaluate(p, e.text, learned[r], "inversion", 0.0, 0.0)
            e.learned_spearman = ev.spearman
            name = "<f-" + hashlib.sha1(f"{seed}-{r}-{v[r].sum().item():.6f}".encode()).hexdigest()[:6] + ">"
            e.token, e.token_file = name, str(save_learned_embeds(out_dir / f"restart{r}" / "learned_embeds.safetensors",
                                                                  name, v[r]))
        return out

    def gumbel(self, p: Problem, budget=60, prior_weight=DEFAULT_PRIOR_WEIGHT, seed=0, keep=10, chains=16,
               lengths=(2, 3, 4, 5), lr=0.3, tau=(1.0, 0.3), fit_weight=1.0, progress=True, **_):
        """Straight-through Gumbel-softmax over the token space: position l's logits are the prior's
        next-token log-probs (given the sampled tokens before it) plus learned offsets theta[c, l];
        loss = -Pearson(cos(image, CLIP_text(tokens)), rank f) - prior_weight x log p(tokens)."""
        torch.manual_seed(seed)
        K, L = len(self.space), max(lengths)
        clip_rows = self.tower.embedding.detach()[self.space.ids]                  # (K, W) CLIP input rows
        prior_rows = self.space.embedding                                           # (K, W) prior input rows
        lens = torch.tensor([lengths[c % len(lengths)] for c in range(chains)])    # (C,)
        theta = torch.zeros(chains, L, K, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=lr)
        img = torch.from_numpy(p.emb[p.fit]).float()
        base = torch.from_numpy(p.base[p.fit]).float()
        target = torch.from_numpy(p.rf_fit).float()
        E = self.tower.embedding.detach()
        sot_c, eot_c = E[self.sot], E[self.eot]
        sot_p = self.prior.gpt.token_embedding.weight[self.sot].detach()
        not_eot = torch.zeros(K)
        not_eot[self.space.eot_k] = float("-inf")
        seen: set[tuple] = set()

        def decode(hard: bool, temp: float):
            """-> one-hot (C, L, K), total prior log p (C,)"""
            xp = sot_p.expand(chains, 1, -1)
            ys, lps = [], []
            for pos in range(L + 1):
                logp = self.space.logits(self.prior.gpt.hidden(xp)[:, -1]).float().log_softmax(-1)   # (C, K)
                if pos == L:
                    break
                z = logp + theta[:, pos] + not_eot
                if hard:
                    y = F.gumbel_softmax(z, tau=temp, hard=True)
                else:
                    y = F.one_hot(z.argmax(-1), K).float()
                ys.append(y)
                lps.append((y * logp.masked_fill(torch.isinf(logp), 0)).sum(-1))
                xp = torch.cat([xp, (y @ prior_rows)[:, None]], 1)
            y = torch.stack(ys, 1)                                                  # (C, L, K)
            # log p(EOT) right after each chain's last token
            full = self.space.logits(self.prior.gpt.hidden(xp)).float().log_softmax(-1)   # (C, L+1, K)
            lp_eot = full[torch.arange(chains), lens, self.space.eot_k]
            lp = torch.stack(lps, 1)                                                 # (C, L)
            mask = torch.arange(L)[None] < lens[:, None]
            return y, (lp * mask).sum(1) + lp_eot                               # total log p (C,)

        for step in tqdm(range(budget), desc="explain: gumbel", disable=not progress):
            temp = tau[0] * (tau[1] / tau[0]) ** (step / max(1, budget - 1))
            y, logp = decode(True, temp)
            xc = y @ clip_rows                                                        # (C, L, W)
            pos = torch.arange(L + 2)[None]
            x = torch.cat([sot_c.expand(chains, 1, -1), xc, torch.zeros(chains, 1, xc.shape[-1])], 1)
            x = torch.where((pos == lens[:, None] + 1)[..., None], eot_c.expand_as(x), x)     # EOT after each chain
            sims = self.tower.features(x, lens + 1) @ img.T - base                              # (C, n)
            sims = sims - sims.mean(1, keepdim=True)
            pearson = (sims @ target) / sims.norm(dim=1).clamp_min(1e-8)
            loss = -(fit_weight * pearson + prior_weight * logp).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                tok = y.argmax(-1)
                for c in range(chains):
                    seen.add(tuple(int(self.space.ids[t]) for t in tok[c, :lens[c]]))
        with torch.no_grad():
            y, _ = decode(False, 1.0)
            tok = y.argmax(-1)
            argmax_rows = [tuple(int(self.space.ids[t]) for t in tok[c, :lens[c]]) for c in range(chains)]
        rows = _with_prefixes(argmax_rows + list(seen))
        obj, _ = self.fit_scores(p, rows, prior_weight)
        best = [rows[i] for i in np.argsort(-obj)[:max(keep, 20)]]
        out = self.finish(p, best, "gumbel", prior_weight, keep)
        for e in out:
            e.extra["argmax"] = tuple(e.extra["ids"]) in set(argmax_rows)
        return out


def _spearman_ties(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho with ties in both (average ranks); 0 when either is constant."""
    ra, rb = _standardise(rankdata(a)), _standardise(rankdata(b))
    return float(ra @ rb)


def _with_prefixes(rows) -> list[tuple]:
    """The rows and all their non-empty prefixes ("a red cross, a" -> also "a red cross", ...)."""
    return list(dict.fromkeys(r[:i] for r in rows for i in range(len(r), 0, -1)))


def _fix_articles(text: str) -> str:
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return re.sub(r"\ban (?=[^aeiou\W])", "a ", text)


def _structural_edits(d: world.Description) -> list[str]:
    """Captions one step from d: an attribute of a phrase removed, set or changed; a phrase dropped
    (keeping one); the background removed, set or changed."""
    from dataclasses import replace
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


# ----------------------------------------------------------------------------- public API
_EXPLAINERS: dict[int, Explainer] = {}


def explainer_for(bundle, concepts: list[str] | None = None) -> Explainer:
    """One Explainer per bundle (its token space and text-feature cache are reused across calls)."""
    key = id(bundle)
    ex = _EXPLAINERS.get(key)
    if ex is None or ex.bundle is not bundle:
        ex = _EXPLAINERS[key] = Explainer(bundle)
    return ex


def explain(bundle, images, scores, method: str = "search", budget: int | None = None,
            prior_weight: float = DEFAULT_PRIOR_WEIGHT, seed: int = 0, progress=None, concepts: list[str] | None = None,
            keep: int = 10, out_dir: str | Path | None = None, centre: bool | str = "auto",
            **options) -> list[Explanation]:
    """Explain scores (one per image) with text: -> up to `keep` Explanations, best first.

    images: PIL images / paths, or their CLIP embeddings (N, D) from bundle.clip.encode_images.
    method: "search" (default), "dissect" (baseline), "inversion" or "gumbel".
    budget: search rounds, or optimisation steps (inversion, gumbel); None = DEFAULT_BUDGET.
    prior_weight: weight of the text's log-prob under the prior (nats) against Spearman's rho.
    concepts: the dissect baseline's concept list (default: ShapesWorld words and phrases).
    progress: False hides the tqdm bars (gr.Progress(track_tqdm=True) shows them in the app).
    out_dir: where inversion writes its learned_embeds.safetensors (default: a temporary folder).
    centre: True: CLIP_t = cos(image, t) - cos(image, generic caption); False: raw cosine; "auto" (default):
    whichever lets the concept list's best text fit the fit half better (extra["centred"] says which).
    Raises TargetError (a ValueError) with a clear message for unusable scores or images."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not (isinstance(prior_weight, (int, float)) and math.isfinite(prior_weight) and prior_weight >= 0):
        raise ValueError(f"prior_weight must be a number >= 0, got {prior_weight!r}")
    budget = DEFAULT_BUDGET[method] if budget is None else int(budget)
    if budget < 0 or budget > 10_000:
        raise ValueError(f"budget must be from 0 to 10000, got {budget}")
    t0 = time.time()
    show = progress is not False
    # one thread for the text side: it is thousands of tiny ops, which extra threads slow down (7x here on
    # a busy 2-core CPU); images are embedded with the process's setting
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ex = explainer_for(bundle)
        torch.set_num_threads(threads)
        p = ex.problem(images, scores, seed, centre)
        torch.set_num_threads(1)
        with torch.no_grad() if method in ("dissect", "search") else torch.enable_grad():
            fn = getattr(ex, method)
            out = fn(p, budget=budget, prior_weight=float(prior_weight), seed=seed, keep=keep, concepts=concepts,
                     out_dir=out_dir, progress=show, **options)
    finally:
        torch.set_num_threads(threads)
    seconds = time.time() - t0
    for e in out:
        e.seconds = seconds
        e.extra["spearman_ceiling"] = spearman_ceiling(p.f[p.held])
        e.extra["centred"] = p.centred
    ex.last_problem = p
    return out


def clip_t(bundle, emb: np.ndarray, text: str, centre: bool = True) -> np.ndarray:
    """CLIP_t of every image embedding (N, D) for one text, as explain() scores it -> (N,)."""
    ex = explainer_for(bundle)
    x = emb @ ex.features([ex.ids(text)])[0]
    return x - emb @ ex.centre if centre else x


def fit_curve(bundle, images_or_emb, scores, text: str, seed: int = 0, centre: bool = True):
    """For plots: held-out (x = CLIP_t, f, h(x)) of one text, with h fitted on the fit half."""
    ex = explainer_for(bundle)
    p = ex.problem(images_or_emb, scores, seed, centre)
    x = clip_t(bundle, p.emb, text, centre)
    rho = spearman_columns(p.rf_fit, x[p.fit][:, None])[0]
    h = monotone_fit(x[p.fit], p.f[p.fit], bool(rho >= 0))
    return x[p.held], p.f[p.held], h.predict(x[p.held]), p.held
