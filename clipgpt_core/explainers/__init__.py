"""Explain a function of images with text (seed 000): find t and a monotone h with
f(im) ~= h(CLIP_t(im)), where CLIP_t(im) = cos(CLIP_image(im), CLIP_text(t)) (centred, see problem.py),
preferring short, likely, minimal texts.

    from clipgpt_core import explain, load_bundle
    ranked = explain(load_bundle(), images, scores, method="partial")   # -> list[Explanation], best first
    best = ranked[0]
    best.text, best.spearman_h, best.spearman, best.r2, best.probe_spearman   # held-out, beside the probe
    best.predict(new_images)                                                # h(CLIP_t) on images it never saw
    table = explain_layer(bundle, images, activations)                      # every unit of a layer at once
    table = explain_units(bundle, model, "layer4", images, units=[3])       # any torch model's units, by hook
    render_check(bundle, classifier_target, best).auc                       # render it: does f fire?

One module per method, each with a `Config` of its own options (a misspelled option is an ExplainError):
  partial    partial descriptions ("red", "two stars", "a red star") scored through prompt-ensembled
             world captions, with a length penalty; and compositions ("A or B", "A but not B")
  search     prior-guided search: prior samples, then one-token and structural edits of the best
  dissect    CLIP-Dissect's SoftWPMI ranking of a concept list (the baseline)
  inversion  textual inversion: k learned token embeddings, read out as the nearest vocabulary tokens
  gumbel     seed 000's proposal: a straight-through Gumbel-softmax token sequence under the prior
  rl         seed 000's second idea: a copy of the prior fine-tuned as the policy (REINFORCE, group baseline)

Shared: problem.py (the embedded problem and the Explainer that scores texts), stats.py, tokens.py (the
text tower on token ids and the prior's restricted vocabulary), explanation.py (the predictor and its
file), layer.py (a whole layer in one job), units.py (any torch model's units), render_check.py (render the explanation, score f on it).
"""
from ..lazy import exports

# public name -> the module that defines it (imported on first use: the methods import torch and the models)
_WHERE = {
    "DEFAULT_BUDGET": "defaults", "DEFAULT_PRIOR_WEIGHT": "defaults", "default_method": "defaults", "LAYER_COLUMNS": "defaults",
    "METHODS": "api", "clip_t": "api", "explain": "api", "fit_curve": "api", "method_config": "api",
    "ExplainError": "errors", "Explanation": "explanation",
    "LayerTable": "layer", "explain_layer": "layer", "layer_activations": "layer",
    "explain_units": "units", "load_vision_model": "units",
    "all_claims": "partial", "claim_bank": "partial", "claim_holds": "partial", "claim_text": "partial",
    "RenderCheck": "render_check", "render_check": "render_check",
    "DISFLUENT_PENALTY": "problem", "FLUENCY_FLOOR": "problem", "MAX_IMAGES": "problem", "Explainer": "problem",
    "Problem": "problem", "Settings": "problem", "explainer_for": "problem", "world_concepts": "problem",
    "standardise": "stats", "monotone_fit": "stats", "r2_score": "stats",
    "ridge_probe": "stats", "spearman_ceiling": "stats", "spearman_columns": "stats", "spearman_ties": "stats",
    "TextTower": "tokens", "TokenSpace": "tokens", "load_learned_embeds": "tokens", "save_learned_embeds": "tokens",
}
__all__ = [n for n in _WHERE if not n.startswith("_")]
__getattr__, __dir__ = exports(__name__, _WHERE)
