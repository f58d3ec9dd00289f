"""What every method shares: the embedded problem (`Problem`: images, scores, the fit / held-out split,
centred or raw CLIP_t) and `Explainer`, one per bundle, which turns texts into token ids, CLIP text
features and prior log-probs (all cached) and scores candidate texts on the fit half.

A text is scored on the fit half by Spearman's rho between f and CLIP_t, plus prior_weight x its
log-prob under the caption prior; h is an isotonic regression of f on CLIP_t fitted on the fit half;
every reported figure is on the held-out half. A text with a token the prior finds less likely than
FLUENCY_FLOOR ranks after every fluent text (it stops word salad such as "a large small in the center",
which a larger prior_weight stopped only by also pushing towards short texts).

CLIP_t is centred: cos(image, t) - cos(image, u), u the unit mean of the concept list's text embeddings
(a generic caption). Raw cosine has a component every caption shares that varies from image to image
(in ShapesWorld it falls with the number of objects); centring compares t with a generic caption, as
zero-shot classification compares it with other texts. centre="auto" picks, per problem, whichever of
the two lets the concept list's best text fit the fit half better (the held-out half is not looked at).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.stats import rankdata

from .. import world
from .errors import TargetError
from .scores import check_scores
from .errors import ExplainError
from .explanation import Explanation
from .stats import spearman_ties, standardise, monotone_fit, r2_score, ridge_probe, spearman_columns
from .tokens import TextTower, TokenSpace

from .defaults import DEFAULT_PRIOR_WEIGHT  # noqa: E402,F401  (re-exported)
# The fluency floor, in nats per token (the prior's restricted vocabulary). On the built-in prior,
# 200 sampled ShapesWorld captions have no token below about -7; "a large small in the center" has one
# at about -9 and "a large the right" at -11 (full vocabulary; see tests/test_explain.py).
FLUENCY_FLOOR = -8.0
DISFLUENT_PENALTY = 1.0      # subtracted from the objective (rho is at most 1): disfluent texts rank last
MAX_IMAGES = 20_000


@dataclass
class Settings:
    """What explain() passes every method besides its own options (see each method's Config)."""
    budget: int                      # search rounds, or optimisation steps
    prior_weight: float = DEFAULT_PRIOR_WEIGHT
    seed: int = 0
    keep: int = 10                   # explanations returned
    progress: bool = True
    concepts: list[str] | None = None
    out_dir: str | None = None       # where files (inversion's learned tokens) go


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




@dataclass
class Problem:
    """Embedded images, scores and the fit / held-out split."""
    emb: np.ndarray          # (N, D) image embeddings
    f: np.ndarray            # (N,) scores
    fit: np.ndarray          # indices of the fit half
    held: np.ndarray         # indices of the held-out half
    base: np.ndarray         # (N,) cos(image, centre), subtracted from every text's similarity (0: raw cosine)
    centred: bool = True     # whether base is the centre (False: raw cosine, base = 0)
    centre: np.ndarray | None = None   # (D,) the centre direction when centred

    def sims(self, feats: np.ndarray, idx=None) -> np.ndarray:
        """CLIP_t (centred or raw, as base says) of the images (idx: a subset) for text features (M, D) -> (n, M)."""
        idx = slice(None) if idx is None else idx
        return self.emb[idx] @ feats.T - self.base[idx, None]

    def vector(self, feat: np.ndarray) -> np.ndarray:
        """The direction whose dot product with an image embedding is this problem's CLIP_t of `feat`."""
        return (feat - self.centre if self.centred and self.centre is not None else feat).astype(np.float32)

    def __post_init__(self):
        self.rf_fit = standardise(rankdata(self.f[self.fit]))
        self.rf_held = standardise(rankdata(self.f[self.held]))

    @cached_property
    def probe_spearman(self) -> float:
        """The reference: held-out rho(f, ridge probe on the whole embedding, fitted on the fit half)."""
        return spearman_ties(self.f[self.held], ridge_probe(self.emb, self.f, self.fit, self.held))


class Explainer:
    """The work behind explain() for one bundle; caches its token space and text features."""

    def __init__(self, bundle, concepts: list[str] | None = None):
        if bundle.prior is None:
            raise ExplainError(f"bundle {bundle.name} has no caption prior")
        self.bundle, self.clip, self.prior = bundle, bundle.clip, bundle.prior
        self.tower = TextTower(bundle.clip)
        self.shapes_world = bundle.is_shapes_world
        self.concepts = concepts or world_concepts()
        phrases = list(self.concepts)
        if self.shapes_world:
            from ..world.corpus import world_captions
            phrases += world_captions(random.Random(0), 40, split="any")
        self.space = TokenSpace(self.prior, phrases)
        self.sot, self.eot = self.space.sot, self.space.eot
        self._features: dict[tuple, np.ndarray] = {}
        self._logp: dict[tuple, tuple[float, float]] = {}       # row -> (mean, min) token log p
        mean = self.features([self.ids(c) for c in self.concepts]).mean(0)
        self.centre = mean / np.linalg.norm(mean)                   # (D,) the generic caption direction
        self.edit_groups = bundle.captioner.edits if bundle.captioner is not None else {}
        self.max_len = 20          # tokens: explanations are short
        # how much a decreasing fit (f high where the image does NOT match t) counts against an increasing
        # one when ranking: 0 = explanations say what f responds to (a decreasing fit mostly finds
        # confounds, e.g. "a purple triangle" for the number of circles: one object, so few circles)
        self.decreasing = 0.0
        # texts with a token less likely than this under the prior (restricted vocabulary) rank after
        # every fluent text: it drops word salad ("a large small in the center") without the length
        # penalty a larger prior_weight brings (calibration in FLUENCY_FLOOR's comment)
        self.fluency_floor: float | None = FLUENCY_FLOOR
        self.claims = None         # partial descriptions' text features, {relations: bank}, built on first use

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
                raise TargetError(f"image embeddings must be (N, {self.clip.dim}) for this bundle's CLIP, got "
                                  f"{emb.shape}: were they made with another model?")
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
            return self.choose_centre(Problem(emb, f, fit, held, emb @ self.centre, True, self.centre),
                                      Problem(emb, f, fit, held, np.zeros(len(emb), np.float32), False))
        if not isinstance(centre, (bool, np.bool_)):
            raise ExplainError(f'centre must be True, False or "auto", got {centre!r}')
        return Problem(emb, f, fit, held, emb @ self.centre if centre else np.zeros(len(emb), np.float32),
                       bool(centre), self.centre if centre else None)

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
                 logp: float, neg: float | None = None, vector: np.ndarray | None = None) -> Explanation:
        """Held-out figures of one text (feat: its CLIP text features (D,); or `vector`, a CLIP_t direction
        already); `objective` is the fit-half score, so choosing among candidates never looks at the
        held-out half. The Explanation carries its direction and h, so it predicts f on new images."""
        vector = p.vector(feat) if vector is None else vector.astype(np.float32)
        x = (p.emb @ vector).astype(np.float64)
        rho_fit = float(spearman_columns(p.rf_fit, x[p.fit][:, None])[0])
        increasing = rho_fit >= 0
        h = monotone_fit(x[p.fit], p.f[p.fit], increasing)
        pred = h.predict(x[p.held])
        rho = float(spearman_columns(p.rf_held, x[p.held][:, None])[0])
        neg = self.decreasing if neg is None else neg
        return Explanation(text, rho, r2_score(p.f[p.held], pred), 0.0, method, 0.0,
                           direction="increasing" if increasing else "decreasing", spearman_fit=rho_fit,
                           objective=max(rho_fit, -neg * rho_fit) + prior_weight * logp,
                           spearman_h=spearman_ties(p.f[p.held], pred), vector=vector,
                           h_x=np.asarray(h.X_thresholds_, np.float64), h_y=np.asarray(h.y_thresholds_, np.float64),
                           clip=self.clip)

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


_EXPLAINERS: dict[int, Explainer] = {}


def explainer_for(bundle) -> Explainer:
    """One Explainer per bundle (its token space and text-feature cache are reused across calls)."""
    key = id(bundle)
    ex = _EXPLAINERS.get(key)
    if ex is None or ex.bundle is not bundle:
        ex = _EXPLAINERS[key] = Explainer(bundle)
    return ex
