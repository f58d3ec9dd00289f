"""Render check, seed 000's closed loop: does an explanation, rendered, make f fire?

Render the explanation (its text, or its learned tokens) n times and a contrast n times, score f on both
sets of renders, and report the AUC of f between them: 1.0 when f scores every render of the
explanation above every contrast render, 0.5 when it cannot tell them apart. Only functions of pixels
can be checked (the classifier's outputs, a unit of any torch model), not planted functions of scenes.
The contrast defaults to n captions of random ShapesWorld scenes, one render each: "does the
explanation's picture move f more than a typical picture does?"
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_auc_score

from ..world.corpus import world_captions
from .planted import Planted
from .errors import ExplainError
from .explanation import Explanation

CONTRAST_SEED = 7_000_000      # the default contrast captions: fixed, and apart from training seeds


@dataclass
class RenderCheck:
    prompt: str                    # what was rendered (the text, or the learned token)
    contrast: list[str]            # the contrast prompts (one per contrast render)
    auc: float                     # AUC of f: explanation renders (positives) vs contrast renders
    f_prompt: np.ndarray           # (n,) f on the explanation's renders
    f_contrast: np.ndarray         # (n,) f on the contrast renders
    images: list = field(repr=False, default_factory=list)
    contrast_images: list = field(repr=False, default_factory=list)

    def summary(self) -> str:
        return (f"render check: AUC {self.auc:.2f} of f between {len(self.f_prompt)} renders of “{self.prompt}” "
                f"(mean f {self.f_prompt.mean():.3f}) and {len(self.f_contrast)} contrast renders "
                f"(mean f {self.f_contrast.mean():.3f})")


def render_check(bundle, f, explanation: Explanation | str, contrast: str | None = None, n: int = 8,
                 seed: int = 0, steps: int | None = None, guidance_scale: float | None = None) -> RenderCheck:
    """f: a function of images (list of PIL images -> (N,) scores), or a target with .score(images), such
    as targets.ClassifierTarget or targets.ModelUnit. explanation: an Explanation (its learned tokens are
    rendered when it has them) or a text. contrast: one text rendered n times; None: n random ShapesWorld
    captions (ShapesWorld bundles only)."""
    score = f.score if hasattr(f, "score") else f
    if isinstance(f, Planted) or not callable(score):
        raise ExplainError("render_check needs f as a function of images (e.g. a ClassifierTarget or ModelUnit); "
                           "planted functions read scenes, which renders do not have")
    if not isinstance(n, int) or not 2 <= n <= 256:
        raise ExplainError(f"n (renders per side) must be an integer from 2 to 256, got {n!r}")
    renderer = bundle.renderer
    if renderer is None:
        raise ExplainError(f"bundle {bundle.name} has no renderer to render the explanation with")
    prompt = explanation
    if isinstance(explanation, Explanation):
        prompt = explanation.render_text
        if explanation.token_file and explanation.token:
            if explanation.token not in renderer.tokens:
                renderer.load_tokens(explanation.token_file)
            prompt = explanation.token
    if contrast is None:
        if not bundle.is_shapes_world:
            raise ExplainError("give a contrast text: the default (random ShapesWorld captions) needs a ShapesWorld bundle")
        contrasts = world_captions(random.Random(CONTRAST_SEED + seed), n)
    else:
        contrasts = [contrast] * n
    images = renderer.render([prompt], num_images=n, steps=steps, guidance_scale=guidance_scale, seed=seed)
    others = [renderer.render([c], num_images=1, steps=steps, guidance_scale=guidance_scale, seed=seed + i)[0]
              for i, c in enumerate(contrasts)]
    f_prompt, f_contrast = np.asarray(score(images), float), np.asarray(score(others), float)
    labels = np.r_[np.ones(n), np.zeros(n)]
    auc = float(roc_auc_score(labels, np.r_[f_prompt, f_contrast]))
    return RenderCheck(prompt, contrasts, auc, f_prompt, f_contrast, images, others)
