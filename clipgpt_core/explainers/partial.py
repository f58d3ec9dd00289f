"""Partial descriptions: an explanation that states only what matters ("red", "in the center", "on a gray
background", "large", "two stars", "a red star").

A claim is a set of attribute values of ShapesWorld ({"colour": "red"}; {"count": 2, "shape": "star"}).
It is read through the world captions that state exactly it: world.caption_text of a Description
with the claimed values and nothing else, one caption per shape when the claim names none (a phrase
needs a noun), averaged in CLIP's text space (prompt ensembling, the CLIP paper's section 3.1.4), so
the direction reads "red" without committing to a shape. Four readings of each claim (ClaimBank);
the one that fits the fit half better is used. A claim is scored on the fit half by rho(f, CLIP_t) minus
`attribute_penalty` for every attribute beyond the first ("a red star" and "two stars" state two), so
an extra attribute must pay for itself in fit and the minimal true claim wins over a longer one that
fits the same. Compositions of the best claims ("A or B", "A but not B") are compose.py's.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .. import world
from .compose import compositions, weighted_sum
from .errors import ExplainError
from .problem import Explainer, Problem, Settings
from .stats import spearman_columns

ORDER = ("count", "size", "colour", "shape", "position", "background")   # the order words take in a caption
OBJECT_ATTRS = ("size", "colour", "shape", "position")


@dataclass
class Config:
    attribute_penalty: float = 0.03   # fit-half rho every attribute beyond the first must add
    compose: bool = True              # also try "A or B", "A and B", "A but not B" (compose.py)
    max_terms: int = 3                # claims in a composition
    compose_pool: int = 8             # compositions are made of the best this many single-attribute claims
                                      # and the best half as many claims of any length
    compose_margin: float = 0.06      # a composition must beat the best single claim (and every composition
                                      # without one of its terms) by this much fit-half objective
    sum_terms: int = 8                # a weighted sum holds at most this many claims (0: no weighted sums)
    sum_penalty: float = 0.005        # fit-half rho each of its attributes beyond the first must add
    sum_margin: float = 0.03          # ... and the sum must beat the best claim or composition by this much
    relations: bool = False           # also claim relations ("a red object left of a blue object"); off by
                                      # default: this CLIP's image vectors barely hold them (docs/results.md,
                                      # Explain), and their two-shape captions otherwise fit one-shape units


def all_claims(relations: bool = True) -> list[dict]:
    """Every claim of one or two attributes (and "two/three/four <shape>s", optionally with a colour or a
    size), and with relations=True every relation between two colours or two shapes: what a ShapesWorld
    function of one or two attributes could be explained by."""
    values = {"colour": list(world.COLOURS), "shape": world.SHAPES, "size": list(world.SIZES),
              "position": world.POSITIONS, "background": list(world.BACKGROUNDS)}
    out = [{a: v} for a, vs in values.items() for v in vs]
    for a, b in itertools.combinations(values, 2):
        if a == "colour" and b == "background":
            out += [{a: c, b: g} for c in values[a] for g in values[b] if c != g]   # never the same colour
        else:
            out += [{a: x, b: y} for x in values[a] for y in values[b]]
    out += [{"count": n} for n in (1, 2, 3, 4)]          # how many objects, whatever they are
    for n in (2, 3, 4):
        for s in world.SHAPES:
            out.append({"count": n, "shape": s})
            out += [{"count": n, "shape": s, "colour": c} for c in world.COLOURS]
            out += [{"count": n, "shape": s, "size": z} for z in world.SIZES]
    # relations between two objects named by colour or by shape, each in one spelling ("left of", "above";
    # "B right of A" is "A left of B": world.captions.relation_values)
    for names in (list(world.COLOURS), world.SHAPES) if relations else ():
        out += [{"relation": f"{a} {r} {b}"} for r in ("left of", "above") for a in names for b in names if a != b]
    return out


def claim_holds(c: dict, scene: world.Scene) -> bool:
    """Is the claim true of the scene, by ground truth: some object has every object attribute it states (a
    count: exactly that many objects, all of them so), the background is the one it names, and for a relation
    some object named by its first side stands so to some object named by its second."""
    if "background" in c and scene.background != c["background"]:
        return False
    if "relation" in c:
        a, rel, b = _relation(c)
        named = lambda o, v: v in (o.colour, o.shape)          # noqa: E731
        return any(named(x, a) and named(y, b) and world.relation_holds(rel, x, y)
                   for x in scene.objects for y in scene.objects if x is not y)
    match = [o for o in scene.objects if all(getattr(o, a) == c[a] for a in OBJECT_ATTRS if a in c)]
    if "count" in c:
        return len(match) == c["count"] == len(scene.objects)
    return bool(match)


def claim_size(c: dict) -> int:
    """Attributes a claim states, for the length penalty: a relation states two objects and where one is."""
    return len(c) + 2 * ("relation" in c)


def _relation(c: dict) -> tuple[str, str, str]:
    a, rest = c["relation"].split(" ", 1)
    rel, b = rest.rsplit(" ", 1)
    return a, rel, b


def claim_text(c: dict) -> str:
    """The displayed text: exactly what is claimed ("red", "a red star", "in the center", "two stars",
    "a large object in the top left", "red, on a gray background")."""
    if "relation" in c:
        a, rel, b = _relation(c)
        if a in world.COLOURS:
            return f"{world.article(a)} {a} object {rel} {world.article(b)} {b} object"
        return f"{world.article(a)} {a} {rel} {world.article(b)} {b}"
    if set(c) == {"count"}:
        return f"{world.COUNT_WORDS[c['count']]} object" + "s" * (c["count"] > 1)
    words = [w for w in (world.COUNT_WORDS.get(c.get("count")), c.get("size"), c.get("colour")) if w]
    if "shape" in c:
        words.append(world.PLURALS[c["shape"]] if c.get("count") else c["shape"])
    text = " ".join(words)
    if "position" in c:
        if text and "shape" not in c:
            text += " object"                    # "a red object in the center": one object is both
        text = (f"{world.article(text)} {text} in the {c['position']}" if text else f"in the {c['position']}")
    elif "shape" in c and not c.get("count"):
        text = f"{world.article(text)} {text}"
    if "background" in c:
        text = f"{text}, on a {c['background']} background" if text and "shape" not in c and "position" not in c \
            else (f"{text} on a {c['background']} background" if text else f"on a {c['background']} background")
    return text


def claim_captions(c: dict, counted: bool = False) -> list[str]:
    """The world captions that state exactly the claim: world.caption_text of a description with the
    claimed values and nothing else, one per shape when the claim names none (a phrase needs a noun).
    counted=True adds, for a claim without a count or position, "two / three / four ..." of them (the
    world's counted form states the colour or size of every object, so it reads "how red" rather than
    "one red object")."""
    if "relation" in c:
        return _relation_captions(c)
    if set(c) == {"count"}:
        return _count_captions(c["count"])
    shapes = [c["shape"]] if "shape" in c else world.SHAPES
    counts = [c["count"]] if "count" in c else [None] + ([2, 3, 4] if counted and "position" not in c else [])
    return [world.caption_text(world.Description(
        (world.Phrase(s, colour=c.get("colour"), size=c.get("size"), position=c.get("position")),),
        count=n, background=c.get("background"))) for s in shapes for n in counts]


def _count_captions(n: int) -> list[str]:
    """n objects, whatever they are: n of one shape ("three stars") and n different shapes listed ("a circle,
    a square and a star"), every shape in turn first."""
    k = len(world.SHAPES)
    caps = [world.caption_text(world.Description((world.Phrase(s),), count=None if n == 1 else n)) for s in world.SHAPES]
    if n > 1:
        caps += [world.caption_text(world.Description(tuple(world.Phrase(world.SHAPES[(i + j) % k]) for j in range(n))))
                 for i in range(k)]
    return caps


def _relation_captions(c: dict) -> list[str]:
    """A relation in both spellings ("A left of B", "B right of A"); sides named by colour take every shape, the
    same on both sides and the next one along (a phrase needs a noun; the average commits to none)."""
    a, rel, b = _relation(c)
    mirror = {"left of": "right of", "above": "below"}[rel]
    if a in world.COLOURS:
        n = len(world.SHAPES)
        pairs = [(world.Phrase(s, colour=a), world.Phrase(world.SHAPES[(i + k) % n], colour=b))
                 for i, s in enumerate(world.SHAPES) for k in (0, 1)]
    else:
        pairs = [(world.Phrase(a), world.Phrase(b))]
    return [world.caption_text(world.Description(pair, relation=r))
            for x, y in pairs for pair, r in (((x, y), rel), ((y, x), mirror))]


READINGS = ("captions", "contrast", "counted captions", "counted contrast")


@dataclass
class ClaimBank:
    """Every claim's text, its directions and its number of attributes (M,). Four readings per claim,
    (M, 4, D): the unit mean of its captions' text embeddings (a text, centred like any text); that mean
    minus the mean over the claims of the same attributes (the contrast "red rather than another
    colour", which needs no centring); and both again with the counted captions. The reading that fits
    the fit half better is used (they all state the same claim)."""
    claims: list[dict]
    texts: list[str]
    feats: np.ndarray
    n_attributes: np.ndarray

    def vectors(self, p: Problem) -> np.ndarray:
        """(M, 4, D) CLIP_t directions on this problem (the text readings centred as the problem is)."""
        v = self.feats.copy()
        for r in (0, 2):
            v[:, r] = p.vector(v[:, r]) if p.centred else v[:, r]
        return v


def claim_bank(ex: Explainer, relations: bool = False) -> ClaimBank:
    """Built once per bundle (about 2,500 distinct captions through the text tower; 5,000 with relations),
    cached on the Explainer."""
    ex.claims = ex.claims or {}
    if relations in ex.claims:
        return ex.claims[relations]
    if not ex.shapes_world:
        raise ExplainError(f"method 'partial' describes ShapesWorld attributes; bundle {ex.bundle.name} is not a "
                           f"ShapesWorld bundle (use 'search' or 'dissect')")
    claims = all_claims(relations)
    caps = [claim_captions(c, counted) for counted in (False, True) for c in claims]
    unique = list(dict.fromkeys(t for cs in caps for t in cs))
    index = {t: i for i, t in enumerate(unique)}
    text_feats = ex.clip.encode_texts(unique)
    mean = np.stack([text_feats[[index[t] for t in cs]].mean(0) for cs in caps]).reshape(2, len(claims), -1)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(claims):
        groups.setdefault(tuple(sorted(c)), []).append(i)
    readings = []
    for m in mean:
        contrast = m.copy()
        for idx in groups.values():
            contrast[idx] -= m[idx].mean(0)
        readings += [m / np.linalg.norm(m, axis=1, keepdims=True), contrast]
    ex.claims[relations] = ClaimBank(claims, [claim_text(c) for c in claims], np.stack(readings, 1).astype(np.float32),
                                     np.array([claim_size(c) for c in claims], dtype=np.float64))
    return ex.claims[relations]


def objectives(rho: np.ndarray, bank: ClaimBank, cfg: Config, neg: float = 0.0) -> np.ndarray:
    """The fit-half ranking score of every claim: rho (a decreasing fit counts x neg) minus the length penalty."""
    return np.maximum(rho, -neg * rho) - cfg.attribute_penalty * (bank.n_attributes - 1)


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    bank = claim_bank(ex, cfg.relations)
    vectors = bank.vectors(p)                                                      # (M, 4, D)
    rho = spearman_columns(p.rf_fit, p.emb[p.fit] @ vectors.reshape(-1, vectors.shape[-1]).T).reshape(len(vectors), -1)
    fit = np.maximum(rho, -ex.decreasing * rho)
    reading = fit.argmax(1)                                                        # (M,) the better reading
    best = vectors[np.arange(len(vectors)), reading]                               # (M, D)
    obj = objectives(rho[np.arange(len(rho)), reading], bank, cfg, ex.decreasing)
    order = np.argsort(-obj, kind="stable")
    single_of = {tuple(c.items()): i for i, c in enumerate(bank.claims) if len(c) == 1}
    out = []
    for i in order[:s.keep]:
        text, terms = bank.texts[i], None
        parts = [single_of.get((item,)) for item in bank.claims[i].items()]
        if len(parts) == 2 and None not in parts and _either_fits_better(p, best[parts]):
            # one CLIP_t direction reads "A, B" additively, which ranks "A or B" just as well: say which it is
            text = " or ".join(bank.texts[j] for j in parts)
            terms = [{"text": bank.texts[j], "weight": 1.0, "sign": 1} for j in parts]
        e = ex.evaluate(p, text, None, "partial", 0.0, 0.0, vector=best[i])
        e.objective, e.claim, e.terms = float(obj[i]), dict(bank.claims[i]), terms
        e.extra["reading"] = READINGS[reading[i]]
        out.append(e)
    # the terms of compositions and sums are ranked by |rho| (a claim f falls with is a "but not" or negative term)
    strength = np.abs(rho[np.arange(len(rho)), reading]) - cfg.attribute_penalty * (bank.n_attributes - 1)
    if cfg.compose and cfg.max_terms > 1:
        # the best single-attribute claims (what "A or B" is usually made of) and the best claims of any length
        singles = [i for i in np.argsort(-strength, kind="stable") if bank.n_attributes[i] == 1][:cfg.compose_pool]
        pool = np.array(list(dict.fromkeys(singles + list(order[:cfg.compose_pool // 2]))))
        for text, vector, objective, terms in compositions(p, [bank.texts[i] for i in pool], best[pool],
                                                            bank.n_attributes[pool], float(obj[order[0]]), cfg):
            e = ex.evaluate(p, text, None, "partial", 0.0, 0.0, vector=vector)
            e.objective, e.terms = objective, terms
            out.append(e)
    if cfg.sum_terms >= 2:
        # the headline: the best claim of one attribute of the objects or the background. Not a count: in scenes
        # of one to four objects "four objects" follows every "number of <X> objects" and would head them all
        head = next(i for i in order if bank.n_attributes[i] == 1 and "count" not in bank.claims[i])
        best_so_far = max(e.objective for e in out)
        found = weighted_sum(p, bank.texts, best, bank.n_attributes, head, best_so_far, cfg)
        if found is not None:
            text, vector, objective, terms = found
            e = ex.evaluate(p, text, None, "partial", 0.0, 0.0, vector=vector)
            e.objective, e.terms, e.extra["kind"] = objective, terms, "weighted sum"
            out.append(e)
    out = sorted(out, key=lambda e: -e.objective)[:s.keep]
    for e, lp in zip(out, ex.prior.log_prob([e.text for e in out])):
        e.log_prior = float(lp)
    return out


def _either_fits_better(p: Problem, vectors: np.ndarray) -> bool:
    """On the fit half: does f follow max(z_A, z_B) (either holds) better than min(z_A, z_B) (both)?"""
    x = p.emb[p.fit] @ vectors.T                                                   # (n, 2)
    z = (x - x.mean(0)) / (x.std(0) + 1e-12)
    rho = spearman_columns(p.rf_fit, np.stack([z.min(1), z.max(1)], 1))
    return bool(rho[1] > rho[0])
