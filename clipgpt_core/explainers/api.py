"""explain(): check the options, embed the problem once, run one method, attach the held-out figures
every explanation reports (its ceiling, the ridge probe beside it). Each method is one module with a
`Config` dataclass of its own options and `run(explainer, problem, settings, config)`."""
from __future__ import annotations

import difflib
import math
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from . import dissect, gumbel, inversion, partial, rl, search
from .defaults import DEFAULT_BUDGET, default_method
from .errors import ExplainError
from .explanation import Explanation
from .problem import DEFAULT_PRIOR_WEIGHT, Settings, explainer_for
from .stats import monotone_fit, spearman_ceiling, spearman_columns

MODULES = {"search": search, "dissect": dissect, "inversion": inversion, "gumbel": gumbel, "partial": partial, "rl": rl}
METHODS = tuple(MODULES)
GRAD_METHODS = ("inversion", "gumbel", "rl")


def method_config(method: str, options: dict):
    """The method's Config from explain()'s extra keyword options; a name it does not have is an error
    (with the closest one), never silently dropped."""
    if method not in MODULES:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        raise ExplainError(f"Unknown method {method!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; choose one of {', '.join(METHODS)}")
    cls = MODULES[method].Config
    names = [f.name for f in fields(cls)]
    for k in options:
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            raise ExplainError(f"method {method!r} has no option {k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                               + f"; its options are: {', '.join(names) or 'none'}")
    return cls(**options)


def explain(bundle, images, scores, method: str | None = None, budget: int | None = None,
            prior_weight: float = DEFAULT_PRIOR_WEIGHT, seed: int = 0, progress=None, concepts: list[str] | None = None,
            keep: int = 10, out_dir: str | Path | None = None, centre: bool | str = "auto",
            **options) -> list[Explanation]:
    """Explain scores (one per image) with text: -> up to `keep` Explanations, best first.

    images: PIL images / paths, or their CLIP embeddings (N, D) from bundle.clip.encode_images.
    method: "partial" (partial descriptions and their compositions), "search", "dissect" (baseline), "inversion",
    "gumbel" or "rl" (a copy of the prior fine-tuned as the policy); None: defaults.default_method(bundle) (partial for a ShapesWorld bundle, else search).
    budget: search rounds, or optimisation steps (inversion, gumbel, rl); None = DEFAULT_BUDGET.
    prior_weight: weight of the text's log-prob under the prior (nats) against Spearman's rho.
    concepts: the dissect baseline's concept list (default: ShapesWorld words and phrases).
    progress: False hides the tqdm bars (gr.Progress(track_tqdm=True) shows them in the app).
    out_dir: where inversion writes its learned_embeds.safetensors (default: a temporary folder).
    centre: True: CLIP_t = cos(image, t) - cos(image, generic caption); False: raw cosine; "auto" (default):
    whichever lets the concept list's best text fit the fit half better (extra["centred"] says which).
    options: the method's own (its Config's fields, e.g. search.Config.n_samples); a misspelled one raises.
    Raises ExplainError / TargetError (ValueErrors) with a clear message for bad options, scores or images."""
    method = default_method(bundle) if method is None else method
    cfg = method_config(method, options)
    if not (isinstance(prior_weight, (int, float)) and math.isfinite(prior_weight) and prior_weight >= 0):
        raise ExplainError(f"prior_weight must be a number >= 0, got {prior_weight!r}")
    budget = DEFAULT_BUDGET[method] if budget is None else int(budget)
    if budget < 0 or budget > 10_000:
        raise ExplainError(f"budget must be from 0 to 10000, got {budget}")
    t0 = time.time()
    settings = Settings(budget, float(prior_weight), seed, keep, progress is not False, concepts,
                        None if out_dir is None else str(out_dir))
    # one thread for the text side: it is thousands of tiny ops, which extra threads slow down (7x here on
    # a busy 2-core CPU); images are embedded with the process's setting
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ex = explainer_for(bundle)
        torch.set_num_threads(threads)
        p = ex.problem(images, scores, seed, centre)
        torch.set_num_threads(1)
        with torch.enable_grad() if method in GRAD_METHODS else torch.no_grad():
            out = MODULES[method].run(ex, p, settings, cfg)
    finally:
        torch.set_num_threads(threads)
    seconds = time.time() - t0
    ceiling, probe = spearman_ceiling(p.f[p.held]), p.probe_spearman
    for e in out:
        e.seconds = seconds
        e.probe_spearman = probe
        e.extra["spearman_ceiling"] = ceiling
        e.extra["centred"] = p.centred
    return out


def clip_t(bundle, emb: np.ndarray, text: str, centre: bool = True) -> np.ndarray:
    """CLIP_t of every image embedding (N, D) for one text, as explain() scores it -> (N,)."""
    ex = explainer_for(bundle)
    x = emb @ ex.features([ex.ids(text)])[0]
    return x - emb @ ex.centre if centre else x


def fit_curve(bundle, images_or_emb, scores, text_or_explanation, seed: int = 0, centre: bool = True):
    """For plots: held-out (x = CLIP_t, f, h(x), held-out indices) of one text (or an Explanation: its own
    CLIP_t, which also covers partial descriptions and compositions), with h fitted on the fit half."""
    ex = explainer_for(bundle)
    p = ex.problem(images_or_emb, scores, seed, centre)
    if isinstance(text_or_explanation, Explanation):
        x = text_or_explanation.clip_t(p.emb)
    else:
        x = clip_t(bundle, p.emb, text_or_explanation, centre)
    rho = spearman_columns(p.rf_fit, x[p.fit][:, None])[0]
    h = monotone_fit(x[p.fit], p.f[p.fit], bool(rho >= 0))
    return x[p.held], p.f[p.held], h.predict(x[p.held]), p.held
