"""Explain a function of images with text (seed 000): find t and a monotone h with
f(im) ~= h(CLIP_t(im)), where CLIP_t(im) = cos(CLIP_image(im), CLIP_text(t)) (centred, see problem.py),
preferring short, likely, minimal texts.

    from clipgpt_core import explain, load_bundle
    ranked = explain(load_bundle(), images, scores, method="partial")   # -> list[Explanation], best first
    best = ranked[0]
    best.text, best.spearman_h, best.spearman, best.r2, best.probe_spearman   # held-out, beside the probe
    best.predict(new_images)                                                # h(CLIP_t) on images it never saw
    table = explain_layer(bundle, images, activations)                      # every unit of a layer at once
    render_check(bundle, classifier_target, best).auc                       # render it: does f fire?

One module per method, each with a `Config` of its own options (a misspelled option is an ExplainError):
  partial    partial descriptions ("red", "two stars", "a red star") scored through prompt-ensembled
             world captions, with a length penalty; and compositions ("A or B", "A but not B")
  search     prior-guided search: prior samples, then one-token and structural edits of the best
  dissect    CLIP-Dissect's SoftWPMI ranking of a concept list (the baseline)
  inversion  textual inversion: k learned token embeddings, read out as the nearest vocabulary tokens
  gumbel     seed 000's proposal: a straight-through Gumbel-softmax token sequence under the prior

Shared: problem.py (the embedded problem and the Explainer that scores texts), stats.py, tokens.py (the
text tower on token ids and the prior's restricted vocabulary), explanation.py (the predictor and its
file), layer.py (a whole layer in one job), render_check.py (render the explanation, score f on it).
"""
from .api import DEFAULT_BUDGET, METHODS, clip_t, explain, fit_curve, method_config
from .errors import ExplainError
from .explanation import Explanation
from .layer import COLUMNS as LAYER_COLUMNS, LayerTable, explain_layer, layer_activations
from .partial import all_claims, claim_bank, claim_text
from .render_check import RenderCheck, render_check
from .problem import (DEFAULT_PRIOR_WEIGHT, DISFLUENT_PENALTY, FLUENCY_FLOOR, MAX_IMAGES, Explainer, Problem,
                      Settings, explainer_for, world_concepts)
from .stats import (_spearman_ties, _standardise, monotone_fit, r2_score, ridge_probe, spearman_ceiling,
                    spearman_columns, spearman_ties)
from .tokens import TextTower, TokenSpace, load_learned_embeds, save_learned_embeds

__all__ = ["DEFAULT_BUDGET", "DEFAULT_PRIOR_WEIGHT", "DISFLUENT_PENALTY", "FLUENCY_FLOOR", "MAX_IMAGES", "METHODS",
           "ExplainError", "Explainer", "Explanation", "Problem", "Settings", "TextTower", "TokenSpace",
           "all_claims", "claim_bank", "claim_text", "clip_t", "explain", "explain_layer", "explainer_for",
           "fit_curve", "layer_activations", "load_learned_embeds", "method_config", "monotone_fit", "r2_score",
           "ridge_probe", "save_learned_embeds", "spearman_ceiling", "spearman_columns", "spearman_ties",
           "world_concepts"]
