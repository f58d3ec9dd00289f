"""Train the ShapesWorld classifier the Explain tab explains: a small CNN that predicts the shape and the
colour of the largest object in a 64x64 image (two heads). Its logits and penultimate units are targets.

    python -m clipgpt_train.classifier              # -> assets/shapes/classifier (fixed seeds, minutes)

Data: `n_train` ShapesWorld scenes (every colour-shape pair, 1-4 objects, random render styles) rendered
once; accuracy on `n_val` scenes from other seeds is written to train_config.json beside the weights.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipgpt_core import world
from clipgpt_core.models.classifier import ClassifierConfig, ShapesClassifier
from clipgpt_core.models.classifier_files import CLASSIFIER_DIR
from .loop import cosine_lr, run_cli, write_train_record


@dataclass
class TrainClassifierConfig:
    out: str = str(CLASSIFIER_DIR)
    n_train: int = 4000
    n_val: int = 500
    epochs: int = 5
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    hidden: int = 64
    seed: int = 0
    val_seed: int = 9_000_000


def largest(scene: world.Scene) -> world.Obj:
    return max(scene.objects, key=lambda o: o.extent)


def make_data(n: int, seed: int, model: ShapesClassifier):
    rng = random.Random(seed)
    images, shapes, colours = [], [], []
    for _ in range(n):
        scene = world.sample_scene(rng, split="any")
        images.append(world.render(scene, rng, world.RenderStyle.random(rng)))
        o = largest(scene)
        shapes.append(model.cfg.shapes.index(o.shape))
        colours.append(model.cfg.colours.index(o.colour))
    return model.tensor(images), torch.tensor(shapes), torch.tensor(colours)


@torch.no_grad()
def accuracy(model, x, ys, yc) -> dict:
    model.eval()
    out = {"shape": [], "colour": []}
    for i in range(0, len(x), 256):
        o = model(x[i:i + 256])
        out["shape"].append(o["shape"].argmax(1))
        out["colour"].append(o["colour"].argmax(1))
    return {"shape": float((torch.cat(out["shape"]) == ys).float().mean()),
            "colour": float((torch.cat(out["colour"]) == yc).float().mean())}


def train(cfg: TrainClassifierConfig, progress: bool = True) -> ShapesClassifier:
    from tqdm import tqdm
    started = time.time()
    torch.manual_seed(cfg.seed)
    model = ShapesClassifier(ClassifierConfig(width=cfg.width, hidden=cfg.hidden))
    x, ys, yc = make_data(cfg.n_train, cfg.seed, model)
    xv, ysv, ycv = make_data(cfg.n_val, cfg.val_seed, model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * (cfg.n_train // cfg.batch)
    g = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(steps), desc="train classifier", disable=not progress)
    for step in bar:
        if step % (cfg.n_train // cfg.batch) == 0:
            order = torch.randperm(cfg.n_train, generator=g)
        i = order[(step % (cfg.n_train // cfg.batch)) * cfg.batch:][:cfg.batch]
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, cfg.lr, steps // 20, cfg.lr / 50)
        model.train()
        xb = x[i]
        if torch.rand((), generator=g) < 0.5:      # the world is left-right symmetric for these labels
            xb = xb.flip(3)
        out = model(xb)
        loss = F.cross_entropy(out["shape"], ys[i]) + F.cross_entropy(out["colour"], yc[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    acc = accuracy(model, xv, ysv, ycv)
    model.save(cfg.out)
    write_train_record(cfg.out, cfg, time.time() - started, val_accuracy=acc)
    print(f"validation accuracy: shape {acc['shape']:.3f}, colour {acc['colour']:.3f}")
    return model


def main(argv=None):
    run_cli(TrainClassifierConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
