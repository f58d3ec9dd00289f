"""What the trainers share: caption files, the learning-rate schedule, the step loop with its
resumable checkpoints, and a command line made from a config dataclass. The ShapesWorld data
streams they draw from are the core's (clipgpt_core.world.corpus): Explain reads them too."""
from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipgpt_core.errors import InputError



def cosine_lr(step: int, steps: int, lr: float, warmup: int, min_lr: float) -> float:
    """Linear warm-up, then cosine decay to min_lr (shared by every training script)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + np.cos(np.pi * progress))


def read_captions(path: str | Path) -> list[str]:
    """Captions from a text file (one per line) or a parquet file (a 'caption' or 'text' column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no caption file at {path}")
    if path.suffix == ".parquet":
        import pandas as pd
        frame = pd.read_parquet(path)
        column = next((c for c in ("caption", "text", "TEXT") if c in frame.columns), None)
        if column is None:
            raise InputError(f"{path} has no 'caption' or 'text' column (columns: {list(frame.columns)})")
        lines = frame[column].astype(str).tolist()
    else:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    captions = [" ".join(line.split()) for line in lines if line.strip()]
    if not captions:
        raise InputError(f"{path} holds no captions")
    return captions


def config_from_args(config_cls, description: str, argv=None):
    """A command line with one --flag per field of a config dataclass; a tuple as commas ("--object-mix 0.1,0.2,0.3,0.4",
    each value of the default's type)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in asdict(config_cls()).items():
        flag = f"--{k.replace('_', '-')}"
        if isinstance(v, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        elif isinstance(v, tuple):
            kind = type(v[0]) if v else str
            p.add_argument(flag, type=lambda text, kind=kind: tuple(kind(x) for x in text.split(",") if x.strip()),
                           default=v, metavar=",".join(map(str, v)) or "A,B")
        else:
            p.add_argument(flag, type=type(v), default=v)
    return config_cls(**vars(p.parse_args(argv)))


def write_train_record(out: str | Path, cfg, spent: float, /, **extra) -> None:
    """train_config.json beside the weights: every setting, plus how the run went (spent: its training seconds;
    positional, so that a record may hold its own "seconds")."""
    (Path(out) / "train_config.json").write_text(json.dumps(
        asdict(cfg) | extra | {"minutes": round(spent / 60, 2)}, indent=2))


def run_cli(config_cls, train_fn, description: str, argv=None) -> None:
    """Every training script's main(): flags from the config, train, say where it saved."""
    cfg = config_from_args(config_cls, description, argv)
    train_fn(cfg)
    print(f"saved to {cfg.out}")


@dataclass
class Resume:
    """How fit() checkpoints a run so that running it again continues where it stopped: the
    modules and RNG whose state the steps change, where to keep it, how often."""
    directory: str
    modules: dict
    rng: random.Random
    every: int = 100
    seconds: float = 0.0     # training time over every session of the run, set by fit()
    key: dict | None = None  # what must match for a checkpoint to continue (default: run_key(cfg))


class StateOf:
    """Gives save_checkpoint / load_checkpoint a state_dict() for things that are not modules: a
    torch.Generator, an EMA of weights (diffusers' EMAModel) ..."""

    def __init__(self, get, put):
        self.state_dict, self.load_state_dict = get, put

    @classmethod
    def generator(cls, g):
        return cls(lambda: {"state": g.get_state()}, lambda d: g.set_state(d["state"]))

    @classmethod
    def ema(cls, ema):
        import torch

        def get():
            return {f"shadow.{i}": p for i, p in enumerate(ema.shadow_params)} | {
                "optimization_step": torch.tensor(ema.optimization_step)}

        def put(d):
            for i, p in enumerate(ema.shadow_params):
                p.data.copy_(d[f"shadow.{i}"])
            ema.optimization_step = int(d["optimization_step"])
        return cls(get, put)


def fit(step_fn, opt, cfg, desc: str, disable: bool = False, resume: Resume | None = None,
        pass_step: bool = False) -> float:
    """The loop the small trainers share: warm-up + cosine schedule (cfg.steps, lr, warmup, min_lr;
    a param group's "lr_scale" scales it),
    one `step_fn()` per step (`step_fn(step)` with pass_step; it returns the loss as a float), a
    progress bar with the smoothed loss.
    With `resume`, a checkpoint every `resume.every` steps and at the end; a run started again with
    the same arguments restarts from it and ends with the same weights. Returns the smoothed loss."""
    start, ema, spent = 0, None, 0.0
    if resume:
        meta = load_checkpoint(resume.directory, resume.modules, opt, resume.rng)
        if meta and meta.get("run") != (resume.key or run_key(cfg)):
            raise InputError(f"The checkpoint in {resume.directory} belongs to another run ({meta.get('run')}); "
                             f"delete that folder to start over, or name another --checkpoint")
        start, ema, spent = (meta["step"], meta["loss_ema"], meta["seconds"]) if meta else (0, None, 0.0)
    last = min(cfg.steps, getattr(cfg, "stop_after", 0) or cfg.steps)
    t0 = time.time() - spent
    bar = tqdm(range(start, last), desc=desc, dynamic_ncols=True, disable=disable, initial=start,
               total=last)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr) * g.get("lr_scale", 1.0)
        loss = step_fn(step) if pass_step else step_fn()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.set_postfix(loss=f"{ema:.3f}")
        if resume and ((step + 1) % resume.every == 0 or step + 1 == last):
            save_checkpoint(resume.directory, resume.modules, opt, step + 1, resume.rng, loss_ema=ema,
                            run=resume.key or run_key(cfg), seconds=time.time() - t0)
    if resume:
        resume.seconds = time.time() - t0
    return ema


def run_key(cfg) -> dict:
    """The settings that must match for a checkpoint to continue a run (not where it writes or how
    many threads it uses)."""
    skip = {"out", "threads", "device", "checkpoint", "fresh", "stop_after"}
    # a setting added after runs were made (field metadata "keyed_when_set") is part of the key only when it
    # differs from its default, so those runs' checkpoints and lineage stay valid
    quiet = {f.name for f in fields(cfg) if f.metadata.get("keyed_when_set") and getattr(cfg, f.name) == f.default}
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in skip | quiet}))


# ----------------------------------------------------------------------------- resumable checkpoints
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"


def save_checkpoint(directory: str | Path, modules: dict, optimizer, step: int, rng: random.Random,
                    **extra) -> None:
    """Everything a run needs to continue bit for bit: module weights, optimizer moments, the step,
    the Python and torch RNG states. Tensors go to safetensors and the rest to JSON (no pickle), and
    the pair is replaced atomically, so a run killed mid-save keeps its previous checkpoint."""
    import torch
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for pid, state in opt["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{pid}.{k}"] = v.contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    version, internal, gauss = rng.getstate()
    meta = {"step": step, "param_groups": opt["param_groups"], "optimizer_scalars": scalars,
            "python_rng": [version, list(internal), gauss]} | extra
    save_file(tensors, directory / (CHECKPOINT_TENSORS + ".tmp"))
    (directory / (CHECKPOINT_STATE + ".tmp")).write_text(json.dumps(meta))
    (directory / (CHECKPOINT_TENSORS + ".tmp")).replace(directory / CHECKPOINT_TENSORS)
    (directory / (CHECKPOINT_STATE + ".tmp")).replace(directory / CHECKPOINT_STATE)


def checkpoint_seconds(directory: str | Path) -> float:
    """The training time a checkpoint has counted over every session of its run so far (0.0 without one)."""
    state = Path(directory) / CHECKPOINT_STATE
    return float(json.loads(state.read_text()).get("seconds", 0.0)) if state.is_file() else 0.0


def load_checkpoint(directory: str | Path, modules: dict, optimizer, rng: random.Random) -> dict | None:
    """Restore what save_checkpoint wrote into live objects; returns its JSON (step, extras), or None
    when the directory holds no checkpoint (a fresh run)."""
    import torch
    from safetensors.torch import load_file
    directory = Path(directory)
    if not (directory / CHECKPOINT_STATE).is_file():
        return None
    meta = json.loads((directory / CHECKPOINT_STATE).read_text())
    tensors = load_file(directory / CHECKPOINT_TENSORS)
    for name, m in modules.items():
        prefix = f"{name}."
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for k, v in meta["optimizer_scalars"].items():
        pid, key = k.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    version, internal, gauss = meta["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    return meta
