"""An explanation is a predictor: a direction in CLIP's image-embedding space (CLIP_t) and the monotone
h fitted on the fit half, so `predict(images) = h(CLIP_t(images))` works on images it never saw.

    best = explain(bundle, images, f)[0]
    best.predict(new_images)                  # PIL images, paths, or (N, D) embeddings
    best.spearman_h, best.spearman, best.r2, best.probe_spearman   # held-out figures, side by side
    best.save("red.json"); Explanation.load("red.json", bundle).predict(folder_images)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ExplainError
from .stats import spearman_ties, r2_score

FORMAT = "clipgpt-explanation/1"


@dataclass
class Explanation:
    text: str                      # the explanation; it says exactly what is claimed
    spearman: float                # held-out Spearman rho between f and CLIP_t (signed)
    r2: float                      # held-out R^2 of the isotonic h(CLIP_t) fitted on the fit half
    log_prior: float               # log p(text) under the caption prior, nats, end-of-text included
    method: str
    seconds: float                 # wall time of the explain() call that produced it
    token_file: str | None = None  # inversion: learned_embeds.safetensors (diffusers' format)
    token: str | None = None       # inversion: the learned token's name in that file, e.g. <f-1a2b3c>
    direction: str = "increasing"  # h increases with CLIP_t, or decreases
    spearman_fit: float = 0.0      # on the fit half
    objective: float = 0.0         # the ranking score on the fit half (rho + prior / length terms)
    learned_spearman: float | None = None   # inversion: held-out rho of the learned tokens themselves
    spearman_h: float = 0.0        # held-out rho(f, h(CLIP_t)), ties allowed: the fidelity figure
    probe_spearman: float | None = None     # held-out rho(f, ridge probe fitted on the same fit-half labels)
    claim: dict | None = None      # partial descriptions: the attribute values claimed, e.g. {"colour": "red"}
    terms: list | None = None      # compositions: [{"text", "weight", "sign"}] of the combined CLIP_t's
    extra: dict = field(default_factory=dict)
    # the predictor: CLIP_t(image) = embedding @ vector; h = piecewise-linear through (h_x, h_y), clipped
    vector: np.ndarray | None = field(default=None, repr=False)
    h_x: np.ndarray | None = field(default=None, repr=False)
    h_y: np.ndarray | None = field(default=None, repr=False)
    clip: object = field(default=None, repr=False, compare=False)   # encodes images that are not embeddings

    @property
    def render_text(self) -> str:
        """What to draw for it: the text, or for a weighted sum (extra["kind"]) its headline, the claim it leads
        with. A renderer reads no weights: drawn together, every positive term makes one crowded scene the unit
        never answers to as a whole (the render check in docs/results.md, Explain v3, compares the two)."""
        if self.extra.get("kind") == "weighted sum" and self.terms:
            return self.terms[0]["text"]
        return self.text

    def row(self) -> list:
        probe = None if self.probe_spearman is None else round(self.probe_spearman, 3)
        return [self.text, round(self.spearman_h, 3), round(self.spearman, 3), round(self.r2, 3), probe,
                round(self.log_prior, 2), self.method]

    # -- the predictor ------------------------------------------------------------------------------
    def embed(self, images) -> np.ndarray:
        """Images (PIL images or paths, or one of them) or CLIP image embeddings ((N, D) or (D,)) -> (N, D)."""
        if isinstance(images, np.ndarray) and images.dtype != object:
            emb = images.astype(np.float32)
            emb = emb[None] if emb.ndim == 1 else emb
            if emb.ndim != 2 or self.vector is None or emb.shape[1] != len(self.vector):
                raise ExplainError(f"image embeddings must be (N, {None if self.vector is None else len(self.vector)}), "
                                   f"got {images.shape}")
            return emb
        if self.clip is None:
            raise ExplainError("This explanation has no CLIP to embed images with: load it with "
                               "Explanation.load(path, bundle), or pass embeddings")
        images = [images] if isinstance(images, (str, Path)) or hasattr(images, "convert") else list(images)
        return self.clip.encode_images(images)

    def clip_t(self, images) -> np.ndarray:
        """CLIP_t of each image, as the explanation was fitted on (centred or raw, or a composition) -> (N,)."""
        if self.vector is None:
            raise ExplainError(f"{self.text!r} has no CLIP_t direction (made by an older version?)")
        return self.embed(images) @ self.vector

    def predict(self, images) -> np.ndarray:
        """h(CLIP_t(image)): the explanation's prediction of f for each image -> (N,)."""
        return self.h(self.clip_t(images))

    def h(self, x: np.ndarray) -> np.ndarray:
        # the isotonic regression's own predict (out_of_bounds="clip") is this interpolation
        return np.interp(np.asarray(x, dtype=np.float64), self.h_x, self.h_y)

    def evaluate(self, images, scores) -> dict:
        """Figures on images it was not fitted on: rho(f, h(CLIP_t)) (ties allowed), rho(f, CLIP_t), R^2."""
        from .scores import check_scores
        f = check_scores(scores)
        x = self.clip_t(images)
        if len(x) != len(f):
            raise ExplainError(f"{len(f)} scores for {len(x)} images")
        pred = self.h(x)
        return {"spearman_h": spearman_ties(f, pred), "spearman": spearman_ties(f, x), "r2": r2_score(f, pred)}

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("text", "spearman", "r2", "log_prior", "method", "seconds", "token_file",
                                              "token", "direction", "spearman_fit", "objective", "learned_spearman",
                                              "spearman_h", "probe_spearman", "claim", "terms")}
        out["extra"] = {k: v for k, v in self.extra.items() if isinstance(v, (str, int, float, bool, type(None)))}
        for k in ("vector", "h_x", "h_y"):
            v = getattr(self, k)
            out[k] = None if v is None else np.asarray(v, dtype=np.float64).tolist()
        return {"format": FORMAT, **out}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, bundle=None) -> "Explanation":
        """A saved explanation; with `bundle`, it can embed images itself (it must be the CLIP it was fitted on)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ExplainError(f"Cannot read an explanation from {path}: {e}") from None
        if not isinstance(d, dict) or d.pop("format", None) != FORMAT or d.get("vector") is None:
            raise ExplainError(f"{path} is not a saved explanation (Explanation.save writes {FORMAT})")
        for k in ("vector", "h_x", "h_y"):
            d[k] = np.asarray(d[k], dtype=np.float64 if k != "vector" else np.float32)
        e = cls(**d)
        if bundle is not None:
            if len(e.vector) != bundle.clip.dim:
                raise ExplainError(f"{path} was fitted on a CLIP of width {len(e.vector)}; this bundle's is {bundle.clip.dim}")
            e.clip = bundle.clip
        return e
