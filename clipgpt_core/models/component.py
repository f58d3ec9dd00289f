"""One way to store a bundle component: a safetensors file plus its config dataclass as JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_component(directory: str | Path, module: torch.nn.Module, config, weights_file: str, config_file: str,
                   dtype: torch.dtype | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to(dtype) if dtype else v.detach()).contiguous() for k, v in module.state_dict().items()}
    save_file(state, directory / weights_file)
    (directory / config_file).write_text(json.dumps(asdict(config), indent=2))
    return directory


def load_component(directory: str | Path, config_cls, weights_file: str, config_file: str):
    """-> (config, float32 state dict). Missing files raise FileNotFoundError naming them."""
    directory = Path(directory)
    config = config_cls(**json.loads((directory / config_file).read_text()))
    state = {k: v.float() for k, v in load_file(directory / weights_file).items()}
    return config, state


def load_module(module_cls, config_cls, directory: str | Path, weights_file: str, config_file: str):
    """A module saved by save_component: built from its config, its weights loaded, in eval mode."""
    cfg, state = load_component(directory, config_cls, weights_file, config_file)
    module = module_cls(cfg)
    module.load_state_dict(state)
    return module.eval()
