"""Train the layout head: a CLIP image vector -> its scene per 3x3 cell and its background (issue 40).

    python -m clipgpt_train.layout_head                                 # -> runs/layout_head (checkpoints: runs/train_layout_head)
    python -m clipgpt_train.layout_head --out assets/shapes/layout_head # into the bundle, beside renderer/
    python -m clipgpt_train.layout_head --steps 20 --n-scenes 512 --out /tmp/lh --checkpoint /tmp/lh_ck   # smoke

Data: cfg.n_scenes ShapesWorld scenes of 1-4 objects (cfg.object_mix) of the train split, so the held-out
colour-shape pairs (world.HELDOUT_PAIRS) are never seen (the head's colour and shape are separate softmaxes, so a
held-out pair is composed, not memorised); rendered once in random styles and encoded by the bundle's frozen CLIP,
cached with each scene's targets under cfg.checkpoint/data.safetensors (a resumed run skips it). A validation set
of each split (cfg.n_val, seen and held-out pairs) is scored at the end: per-cell accuracies in train_config.json.
Loss: clipgpt_core.models.layout_head.head_loss; AdamW, warm-up + cosine (loop.fit), Gaussian noise on the vectors
(cfg.vector_noise, renormalised) so the head tolerates another renderer's pixels. Resumable: run the same command
again and it continues from cfg.checkpoint.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clipgpt_core.models.layout_head import LayoutHead, LayoutHeadConfig, LayoutHeadNet, head_loss, scene_targets
from clipgpt_core.world.corpus import world_scenes
from .loop import Resume, fit, run_cli, write_train_record

TARGETS = ("occupied", "colour", "shape", "size", "offset", "background")


@dataclass
class LayoutHeadTrainConfig:
    bundle: str = "shapes"                     # whose CLIP image tower makes the vectors (frozen)
    out: str = "runs/layout_head"              # the bundle's: assets/shapes/layout_head
    seed: int = 0
    threads: int = 1
    n_scenes: int = 40000                      # train-split scenes rendered and encoded once
    n_val: int = 1000                          # per split (train pairs, held-out pairs), scored at the end
    object_mix: tuple = (0.25, 0.35, 0.2, 0.2)   # shares of 1-4 objects
    steps: int = 6000
    batch: int = 256
    lr: float = 1e-3
    warmup: int = 100
    min_lr: float = 2e-5
    hidden: int = 768
    layers: int = 3
    dropout: float = 0.1
    vector_noise: float = 0.03                 # std of Gaussian noise per coordinate, before renormalising
    checkpoint: str = "runs/train_layout_head"  # resumable state and the data cache ("" = none)
    stop_after: int = 0                        # stop (checkpointed) after this many steps; 0: run to cfg.steps


def _key(cfg) -> str:
    return json.dumps({k: getattr(cfg, k) for k in ("bundle", "seed", "n_scenes", "n_val", "object_mix")},
                      sort_keys=True)


@torch.no_grad()
def encode_data(cfg: LayoutHeadTrainConfig, clip, head_cfg: LayoutHeadConfig, progress: bool = True) -> dict:
    """-> {split: {"vectors": (N, d), target: ...}} for "train", "val_train", "val_heldout"; cached."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm
    cache = Path(cfg.checkpoint) / "data.safetensors" if cfg.checkpoint else None
    if cache is not None and cache.is_file():
        with safe_open(cache, "pt") as f:
            if (f.metadata() or {}).get("key") == _key(cfg):
                flat = load_file(cache)
                out: dict = {}
                for k, v in flat.items():
                    split, name = k.split("/")
                    out.setdefault(split, {})[name] = v
                return out
    rng = random.Random(cfg.seed + 11)
    out = {}
    for split, n, world_split in (("train", cfg.n_scenes, "train"), ("val_train", cfg.n_val, "train"),
                                  ("val_heldout", cfg.n_val, "heldout")):
        vectors, targets = [], []
        for i in tqdm(range(0, n, 512), desc=f"render + encode {split}", disable=not progress):
            images, scenes = world_scenes(rng, min(512, n - i), split=world_split, object_mix=cfg.object_mix)
            vectors.append(torch.from_numpy(clip.encode_images(images)).float())
            targets.append(scene_targets(scenes, head_cfg))
        out[split] = {"vectors": torch.cat(vectors)} | {k: torch.cat([t[k] for t in targets]) for k in TARGETS}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({f"{s}/{k}": v.contiguous() for s, d in out.items() for k, v in d.items()}, cache,
                  metadata={"key": _key(cfg)})
    return out


@torch.no_grad()
def score(net: LayoutHeadNet, data: dict) -> dict:
    """Per-cell accuracies on a split: occupancy of every cell; colour/shape/size/all three on occupied cells;
    background; whole scene (every cell's occupancy and object right, and the background)."""
    net.eval()
    out = net(data["vectors"])
    occ = out["occupied"].argmax(-1)
    has = data["occupied"] == 1
    right = {a: (out[a].argmax(-1) == data[a]) | ~has for a in ("colour", "shape", "size")}
    obj = right["colour"] & right["shape"] & right["size"]
    bg = out["background"].argmax(-1) == data["background"]
    scene = (occ == data["occupied"]).all(-1) & obj.all(-1) & bg
    r = lambda x: round(float(x), 4)   # noqa: E731
    return {"cells": r((occ == data["occupied"]).float().mean()),
            **{a: r(right[a][has].float().mean()) for a in right}, "object": r(obj[has].float().mean()),
            "background": r(bg.float().mean()), "scene": r(scene.float().mean())}


def train(cfg: LayoutHeadTrainConfig, clip=None, progress: bool = True) -> LayoutHead:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if clip is None:
        from clipgpt_core.bundle import load_bundle
        clip = load_bundle(cfg.bundle, strict=False).clip
    t0 = time.time()
    head_cfg = LayoutHeadConfig(dim=clip.dim, hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout)
    data = encode_data(cfg, clip, head_cfg, progress)
    t_encode = time.time() - t0
    train_set = data["train"]
    torch.manual_seed(cfg.seed)         # the same init whether the data came from the cache or not
    net = LayoutHeadNet(head_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = random.Random(cfg.seed + 12)
    n = len(train_set["vectors"])

    def step() -> float:
        net.train()
        idx = torch.tensor([rng.randrange(n) for _ in range(cfg.batch)])
        x = train_set["vectors"][idx]
        x = x + cfg.vector_noise * torch.randn_like(x)
        loss = head_loss(net(x), {k: train_set[k][idx] for k in TARGETS})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    resume = Resume(cfg.checkpoint, {"net": net}, rng, every=500) if cfg.checkpoint else None
    ema = fit(step, opt, cfg, "train layout head", disable=not progress, resume=resume)
    head = LayoutHead(net.eval())
    head.save(cfg.out)
    scores = {s: score(net, data[s]) for s in ("val_train", "val_heldout")}
    write_train_record(cfg.out, cfg, time.time() - t0, clip=getattr(clip, "model_name", None), encode_seconds=round(t_encode, 1),
                       train_seconds=round(resume.seconds if resume else time.time() - t0 - t_encode, 1),
                       final_loss_ema=ema, params=sum(p.numel() for p in net.parameters()), val=scores)
    if progress:
        print(json.dumps(scores, indent=1))
    return head


def main(argv=None):
    run_cli(LayoutHeadTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
