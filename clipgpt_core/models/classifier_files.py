"""Where the ShapesWorld classifier's files are and what its outputs are called, read without torch: the
Explain tab is laid out from these (its output names) before any model is in memory."""
from __future__ import annotations

import json
from pathlib import Path

from ..paths import ASSETS

CLASSIFIER_DIR = ASSETS / "shapes" / "classifier"
CLASSIFIER_FILES = ("classifier.safetensors", "classifier_config.json")     # classifier.py's weights, config


def classifier_dir(bundle=None) -> Path | None:
    """The bundle's ShapesWorld classifier folder (its classifier/, else the built-in one for a ShapesWorld
    bundle), or None when there is none."""
    for d in ([Path(bundle.path) / "classifier"] if bundle is not None and bundle.path else []) + [CLASSIFIER_DIR]:
        if (d / CLASSIFIER_FILES[0]).is_file():
            if bundle is not None and d == CLASSIFIER_DIR and not bundle.is_shapes_world:
                return None
            return d
    return None


def classifier_outputs(bundle=None) -> list[str]:
    """The output names ClassifierTarget takes, read from the classifier's config (no model is loaded)."""
    d = classifier_dir(bundle)
    if d is None:
        return []
    cfg = json.loads((d / CLASSIFIER_FILES[1]).read_text())
    return output_names(cfg["shapes"], cfg["colours"], cfg["hidden"])


def output_names(shapes, colours, hidden: int) -> list[str]:
    return [f"shape:{s}" for s in shapes] + [f"colour:{c}" for c in colours] + [f"unit {i}" for i in range(hidden)]
