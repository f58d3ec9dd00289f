"""The defaults a UI lays the Explain tab out from, apart from the methods (which import torch and the
models), so the tab is built before any model is in memory."""

DEFAULT_BUDGET = {"search": 4, "dissect": 0, "inversion": 150, "gumbel": 60, "partial": 0}   # rounds / - / steps / steps / -
DEFAULT_PRIOR_WEIGHT = 0.01
# explain_layer's table, one row per unit
LAYER_COLUMNS = ["unit", "explanation", "held-out ρ(f, h(CLIP_t))", "held-out ρ(f, CLIP_t)", "held-out R²",
                 "ridge probe ρ", "runner-up", "fit-half objective"]
