"""What the renderer's UNet stages share: images and captions as the pipeline sees them, the weighted denoising
loss, batches of posterior latents and timesteps, and the step loop with EMA and resumable checkpoints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from clipgpt_core import world
from .loop import Resume, StateOf, fit

def to_pixels(images) -> torch.Tensor:
    """list of PIL 64x64 RGB -> (B, 3, 64, 64) float in [-1, 1], as StableDiffusionPipeline's VAE sees them."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))  # (B, H, W, 3)
    return x.permute(0, 3, 1, 2) / 127.5 - 1


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """captions -> (B, T, W) last hidden states, tokenized exactly as StableDiffusionPipeline does."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0]


# ----------------------------------------------------------------------------- losses
def unet_loss(unet, scheduler, latents, text, t, noise, weight=None, layout=None) -> torch.Tensor:
    """latents (B, 4, h, w) scaled (h = w = 32 for the built-in renderer); text (B, T, W); t (B,); noise like
    latents -> MSE on the target, weighted per latent cell by `weight` (B, 1, h, w) when given. A layout
    map (B, C, h, w) is concatenated to the noisy latent, as LayoutDiffusionPipeline does."""
    noisy = scheduler.add_noise(latents, noise, t)
    if layout is not None:
        noisy = torch.cat([noisy, layout], dim=1)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    error = (unet(noisy, t, text).sample - target) ** 2                 # (B, 4, h, w)
    if weight is None:
        return error.mean()
    return (error * weight).sum() / (weight.sum() * error.shape[1])


def object_masks(scenes, size: int) -> torch.Tensor:
    """scenes -> (N, 1, size, size): 1 on latent cells whose centre lies within an object's reach. A small
    object covers ~6x6 of 32x32 cells, so in plain MSE the background outweighs it ~25:1, and the
    model learns to leave small objects out; weighting these cells counters that."""
    cell = world.CANVAS / size
    centres = (torch.arange(size) + 0.5) * cell                         # (size,) pixel centres
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    out = torch.zeros(len(scenes), 1, size, size)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            out[i, 0] += ((xx - o.cx) ** 2 + (yy - o.cy) ** 2 <= (o.extent / 2 + cell / 2) ** 2).float()
    return out.clamp_(max=1)


@dataclass
class Stage:
    """One stage's schedule for fit(), with the whole renderer recipe so a checkpoint is only
    continued by the same run."""
    steps: int
    lr: float
    warmup: int
    min_lr: float
    recipe: dict


def stage_schedule(steps, lr, cfg):
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "threads", "device", "checkpoint")}
    return Stage(steps, lr, min(cfg.warmup, max(1, steps // 5)), cfg.min_lr, recipe)


def optimizer_step(opt, params, loss, clip):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


# ----------------------------------------------------------------------------- stages
def draw_latents(data, idx: list[int], scale: float, scheduler, high_share: float, high_min: int, g):
    """Latents of scenes `idx` drawn from their VAE posterior (B, 4, 32, 32), timesteps (B,) with a share of them at
    t >= high_min (where outlines are decided), and noise like the latents."""
    _, mean, std, _ = data
    z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
    n_high = round(high_share * len(idx))
    t[:n_high] = torch.randint(high_min, scheduler.config.num_train_timesteps, (n_high,), generator=g)
    return z, t, torch.randn(z.shape, generator=g)


def fit_with_ema(unet, opt, ema, g, rng, loss_fn, stage, desc: str, cfg, name: str, log, progress: bool):
    """The UNet stages' loop: a step of loss_fn(), EMA, resumable under cfg.checkpoint/name; -> the EMA UNet."""
    def step() -> float:
        loss = loss_fn()
        optimizer_step(opt, unet.parameters(), loss, cfg.grad_clip)
        ema.step(unet.parameters())
        if log is not None:
            log.append({"loss": loss.item()})
        return loss.item()

    state = {"unet": unet, "ema": StateOf.ema(ema), "noise": StateOf.generator(g)}
    fit(step, opt, stage, desc, disable=not progress,
        resume=Resume(f"{cfg.checkpoint}/{name}", state, rng) if cfg.checkpoint else None)
    ema.copy_to(unet.parameters())
    return unet.eval()
