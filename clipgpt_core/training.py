"""What the training scripts share: data streams from ShapesWorld, caption files, the
learning-rate schedule and a command line made from a config dataclass."""
from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import world


def cosine_lr(step: int, steps: int, lr: float, warmup: int, min_lr: float) -> float:
    """Linear warm-up, then cosine decay to min_lr (shared by every training script)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + np.cos(np.pi * progress))


def world_captions(rng: random.Random, n: int, split: str = "train",
                   object_mix=(0.4, 0.3, 0.2, 0.1)) -> list[str]:
    """n captions of fresh random ShapesWorld scenes (no rendering: text only)."""
    out = []
    for _ in range(n):
        k = rng.choices([1, 2, 3, 4], weights=object_mix)[0]
        scene = world.sample_scene(rng, n_objects=k, split=split)
        out.append(world.caption_text(world.describe(scene, rng), rng))
    return out


def read_captions(path: str | Path) -> list[str]:
    """Captions from a text file (one per line) or a parquet file (a 'caption' or 'text' column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no caption file at {path}")
    if path.suffix == ".parquet":
        import pandas as pd
        frame = pd.read_parquet(path)
        column = next((c for c in ("caption", "text", "TEXT") if c in frame.columns), None)
        if column is None:
            raise ValueError(f"{path} has no 'caption' or 'text' column (columns: {list(frame.columns)})")
        lines = frame[column].astype(str).tolist()
    else:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    captions = [" ".join(line.split()) for line in lines if line.strip()]
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions


OBJECT_MIX = (0.5, 0.3, 0.12, 0.08)   # shares of scenes with 1, 2, 3 and 4 objects


def world_pairs(rng: random.Random, n: int, split: str = "train", object_mix=OBJECT_MIX):
    """n rendered examples in random render styles -> images, captions, scenes, descriptions."""
    images, captions, scenes, descs = [], [], [], []
    for _ in range(n):
        k = rng.choices([1, 2, 3, 4], weights=object_mix)[0]
        scene = world.sample_scene(rng, n_objects=k, split=split)
        images.append(world.render(scene, rng, world.RenderStyle.random(rng)))
        descs.append(world.describe(scene, rng))
        captions.append(world.caption_text(descs[-1], rng))
        scenes.append(scene)
    return images, captions, scenes, descs


def config_from_args(config_cls, description: str, argv=None):
    """A command line with one --flag per field of a config dataclass (tuples stay at their default)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in asdict(config_cls()).items():
        flag = f"--{k.replace('_', '-')}"
        if isinstance(v, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        elif not isinstance(v, tuple):
            p.add_argument(flag, type=type(v), default=v)
    return config_cls(**vars(p.parse_args(argv)))


def write_train_record(out: str | Path, cfg, started: float, **extra) -> None:
    """train_config.json beside the weights: every setting, plus how the run went."""
    (Path(out) / "train_config.json").write_text(json.dumps(
        asdict(cfg) | extra | {"minutes": round((time.time() - started) / 60, 2)}, indent=2))


def run_cli(config_cls, train_fn, description: str, argv=None) -> None:
    """Every training script's main(): flags from the config, train, say where it saved."""
    cfg = config_from_args(config_cls, description, argv)
    train_fn(cfg)
    print(f"saved to {cfg.out}")


def fit(step_fn, opt, cfg, desc: str, disable: bool = False) -> float:
    """The loop the small trainers share: warm-up + cosine schedule (cfg.steps, lr, warmup, min_lr;
    a param group's "lr_scale" scales it),
    one `step_fn()` per step (it returns the loss as a float), a progress bar with the smoothed loss.
    Returns that smoothed loss."""
    bar = tqdm(range(cfg.steps), desc=desc, dynamic_ncols=True, disable=disable)
    ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr) * g.get("lr_scale", 1.0)
        loss = step_fn()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.set_postfix(loss=f"{ema:.3f}")
    return ema
