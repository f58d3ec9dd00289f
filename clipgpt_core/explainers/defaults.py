"""The defaults a UI lays the Explain tab out from, apart from the methods (which import torch and the
models), so the tab is built before any model is in memory."""

DEFAULT_BUDGET = {"search": 4, "dissect": 0, "inversion": 150, "gumbel": 60, "partial": 0, "rl": 40}
# (rounds / - / steps / steps / - / steps)
DEFAULT_PRIOR_WEIGHT = 0.01


def default_method(bundle) -> str:
    """The one default of explain(), the CLI and the tab: "partial" (partial descriptions and their compositions)
    where the bundle speaks the world's language, which wins bench_explain there (docs/results.md, Explain);
    "search" (the prior samples, CLIP scores) for any other bundle, which partial cannot describe."""
    return "partial" if bundle.is_shapes_world else "search"
# explain_layer's table, one row per unit
LAYER_COLUMNS = ["unit", "explanation", "held-out ρ(f, h(CLIP_t))", "held-out ρ(f, CLIP_t)", "held-out R²",
                 "ridge probe ρ", "runner-up", "fit-half objective"]
