"""Any vision model's units as functions to explain (seed 000's case): a torch module, a layer picked by its
name in model.named_modules() and some or all of its units, read through a forward hook, then explained all at
once (layer.py). Conv channels are pooled over space, by their mean or maximum, as the caller says.

    model = load_vision_model("resnet.pt2")                              # torch.export.save(...) output
    model = load_vision_model(class_path="mypkg.nets:Net", state_dict="net.safetensors")
    table = explain_units(bundle, model, "layer4", images, units=[3, 17], pool="mean")
    table.rows[0]["explanation"], table.explanations[0].predict(new_images)

Files: a torch.export program (.pt2: its layers keep their names and take hooks), a TorchScript file (its
whole output only: TorchScript modules take no hooks) or a module class plus a safetensors state dict
(never a pickle).
"""
from __future__ import annotations

import importlib
import io
from pathlib import Path

import numpy as np
import torch

from .errors import ExplainError
from .layer import LayerTable, explain_layer, layer_activations


def load_vision_model(path: str | Path | None = None, class_path: str | None = None,
                      state_dict: str | Path | None = None) -> torch.nn.Module:
    """A vision model from a file: a .pt2 (torch.export), a TorchScript file, or `class_path` ("module:Class",
    built with no arguments) with its weights from `state_dict` (safetensors)."""
    if (path is None) == (class_path is None):
        raise ExplainError("Give a model file (.pt2 from torch.export, or TorchScript), or a class and its state dict")
    if class_path is not None:
        module_name, _, name = class_path.partition(":")
        if not name:
            raise ExplainError(f"Name the class as module:Class, e.g. torchvision.models:resnet18, not {class_path!r}")
        try:
            # the user's own code, named by the user (never a project module): it is what they ask to explain
            model = getattr(importlib.import_module(module_name), name)()
        except (ImportError, AttributeError) as e:
            raise ExplainError(f"Cannot build {class_path}: {e}") from None
        if state_dict is not None:
            from safetensors.torch import load_file
            try:
                model.load_state_dict(load_file(str(Path(state_dict).expanduser())))
            except (OSError, RuntimeError) as e:
                raise ExplainError(f"Cannot load {state_dict} into {class_path}: {e}") from None
        return model.eval()
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExplainError(f"No model file at {path}")
    try:
        if path.suffix == ".pt2" or _is_exported_program(path):       # an upload may have lost its name
            return torch.export.unflatten(torch.export.load(io.BytesIO(path.read_bytes())))   # any file name
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise ExplainError(f"{path.name} is neither a torch.export program (.pt2) nor a TorchScript file: {e}") from None


def explain_units(bundle, model: torch.nn.Module, layer: str, images, units=None, pool: str = "mean",
                  preprocess=None, batch_size: int = 64, embeddings=None, **kwargs) -> LayerTable:
    """Explain units of `model`'s `layer` on `images` (PIL images or paths): `units` (indices; None: all) ->
    LayerTable, one row per unit named "layer:i". preprocess: a list of images -> (B, 3, H, W) tensor (default:
    the model's own `tensor` method, else 224x224 with ImageNet normalisation). embeddings: the images' CLIP
    embeddings when already computed. kwargs go to explain_layer."""
    images = list(images)
    acts = layer_activations(model, layer, images, preprocess, batch_size, pool)                      # (N, U)
    chosen = list(range(acts.shape[1])) if units is None else [int(u) for u in np.atleast_1d(units)]
    bad = [u for u in chosen if not 0 <= u < acts.shape[1]]
    if bad:
        raise ExplainError(f"Layer {layer!r} has {acts.shape[1]} units (0-{acts.shape[1] - 1}); no unit {bad[0]}")
    return explain_layer(bundle, images if embeddings is None else embeddings, acts[:, chosen],
                         [f"{layer or 'output'}:{u}" for u in chosen], **kwargs)


def _is_exported_program(path: Path) -> bool:
    """torch.export.save writes a zip holding models/model.json; TorchScript's holds code/ and data.pkl."""
    import zipfile
    try:
        return any(name.endswith("models/model.json") for name in zipfile.ZipFile(path).namelist())
    except zipfile.BadZipFile:
        return False
