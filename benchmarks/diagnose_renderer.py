"""Where does the renderer lose the shape? Per-timestep denoising loss on object cells and on background
cells, with the true caption, with the caption's shape word swapped, and with no caption.

    python -m benchmarks.diagnose_renderer [--bundle shapes] [--n 64] [--out benchmarks/results/render_diagnosis.json]

Single-object scenes with large objects (the renderer bar's case), encoded by the bundle's VAE, noised at
a grid of timesteps (the same noise for every caption), and denoised once by the UNet:
  * loss_object / loss_background: the v-prediction MSE on latent cells the object covers / the others;
  * shape_gain: loss_object with the shape word swapped minus with the true caption. Near 0 means the
    UNet does not use the shape word at that noise level: conditioning, not capacity, is what limits it;
  * text_gain: loss_object without any caption minus with the true caption (all conditioning).
And where the outline is lost when sampling ("shape_kept"): the same encoded scenes noised to t_start
and denoised from there by the pipeline's own sampler (DPM-Solver++, 20 steps, guidance 4), judged by the
model-free silhouette judge (benchmarks/silhouette.py); t_start 1000 is plain text-to-image, and "vae" is
the decoded clean latent (the ceiling).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from clipgpt_core import world
from clipgpt_core.bundle import load_bundle
from benchmarks.silhouette import judge_shape
from clipgpt_train.renderer import encode_text, object_masks, to_pixels

TIMESTEPS = (50, 200, 400, 600, 800, 950)
STARTS = (200, 400, 600, 800, 1000)


@torch.no_grad()
def diagnose(renderer, n: int, seed: int = 0) -> dict:
    pipe = renderer.pipe
    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    train_sched = DDPMScheduler.from_config(scheduler.config)     # the training schedule: add_noise, get_velocity
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng, n_objects=1, split="train", sizes=["large"]) for _ in range(n)]
    images = [world.render(s, rng, world.RenderStyle.random(rng)) for s in scenes]
    z = vae.encode(to_pixels(images)).latent_dist.mean * vae.config.scaling_factor         # (n, 4, 16, 16)
    mask = object_masks(scenes, z.shape[-1])                                                  # (n, 1, 16, 16)
    true = [f"a large {s.objects[0].colour} {s.objects[0].shape} on a {s.background} background" for s in scenes]
    swapped = [t.replace(f" {s.objects[0].shape} ", " " + rng.choice([x for x in world.SHAPES
                                                                       if x != s.objects[0].shape]) + " ")
               for t, s in zip(true, scenes)]
    texts = {k: encode_text(pipe.tokenizer, pipe.text_encoder, v) for k, v in
             (("true", true), ("swapped", swapped), ("none", [""] * n))}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in TIMESTEPS:
        tt = torch.full((n,), t)
        noise = torch.randn(z.shape, generator=g)
        noisy = train_sched.add_noise(z, noise, tt)
        target = train_sched.get_velocity(z, noise, tt)
        row = {}
        for k, txt in texts.items():
            err = ((unet(noisy, tt, txt).sample - target) ** 2).mean(1, keepdim=True)         # (n, 1, 16, 16)
            row[f"object_{k}"] = float((err * mask).sum() / mask.sum())
            row[f"background_{k}"] = float((err * (1 - mask)).sum() / (1 - mask).sum())
        out[t] = {"loss_object": row["object_true"], "loss_background": row["background_true"],
                  "shape_gain": row["object_swapped"] - row["object_true"],
                  "text_gain": row["object_none"] - row["object_true"]}
    return out


@torch.no_grad()
def shape_kept(renderer, n: int, seed: int = 5, steps: int = 20, guidance: float = 4.0) -> dict:
    """t_start -> share of renders whose silhouette is the scene's shape, denoising from the scene's
    latent noised to t_start ("vae": decoding the clean latent)."""
    pipe = renderer.pipe
    unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
    train_sched = DDPMScheduler.from_config(sched.config)
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng, n_objects=1, split="train", sizes=["large"]) for _ in range(n)]
    images = [world.render(s, rng, world.RenderStyle.random(rng)) for s in scenes]
    prompts = [f"a large {s.objects[0].colour} {s.objects[0].shape} on a {s.background} background" for s in scenes]
    z0 = vae.encode(to_pixels(images)).latent_dist.mean * vae.config.scaling_factor

    def judged(latents) -> float:
        decoded = pipe.image_processor.postprocess(vae.decode(latents / vae.config.scaling_factor).sample,
                                                   output_type="pil")
        return round(sum(judge_shape(im, s.background)[0] == s.objects[0].shape
                         for im, s in zip(decoded, scenes)) / n, 3)

    cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True, [""] * n)
    g = torch.Generator().manual_seed(seed)
    out = {"vae": judged(z0)}
    for t_start in STARTS:
        sched.set_timesteps(steps)
        tail = [t for t in sched.timesteps if t < t_start]
        if hasattr(sched, "set_begin_index"):    # multistep solvers; DDIM / DDPM step from t alone
            sched.set_begin_index(len(sched.timesteps) - len(tail))
        noise = torch.randn(z0.shape, generator=g)
        x = train_sched.add_noise(z0, noise, torch.full((n,), int(tail[0]))) if t_start < 1000 else noise
        for t in tail:
            eu, ec = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
            x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
        out[t_start] = judged(x)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", default=None)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/render_diagnosis.json")
    args = p.parse_args()
    t0 = time.time()
    bundle = load_bundle(args.bundle)
    result = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "renderer": bundle.renderer.source,
              "per_timestep": diagnose(bundle.renderer, args.n), "shape_kept": shape_kept(bundle.renderer, args.n),
              "seconds": None}
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("t     loss_object  loss_background  shape_gain  text_gain")
    for t, r in result["per_timestep"].items():
        print(f"{t:<5} {r['loss_object']:.4f}       {r['loss_background']:.4f}           "
              f"{r['shape_gain']:+.4f}     {r['text_gain']:+.4f}")
    print("silhouette of the scene's shape, denoising from its latent noised to t_start:",
          ", ".join(f"{k}: {v:.2f}" for k, v in result["shape_kept"].items()))


if __name__ == "__main__":
    main()
