"""Train the built-in renderer: a small Stable-Diffusion-style model on ShapesWorld that draws text and layouts.

    python -m clipgpt_train.renderer                           # -> assets/shapes/renderer
    python -m clipgpt_train.renderer --device cuda             # the same recipe on a GPU
    python -m clipgpt_train.renderer --out DIR --with-text-encoder   # a standalone pipeline
    python -m clipgpt_train.renderer --steps-vae 5 --steps-unet 5 --n-latents 64 --steps-layout 5 --out /tmp/r  # smoke
    python -m clipgpt_train.renderer --from-pipeline DIR --out OUT   # stage 3 only, on DIR's stages 1-2 (a text renderer)

Three stages, as Stable Diffusion and then its depth-to-image / inpainting models were made, then one pipeline
(how each setting was chosen, with the figures: docs/results.md, Render):
  1. AutoencoderKL: 64x64x3 images <-> 32x32x4 latents (2x2 px a cell: a large object spans 11-14 cells, so its
     outline is spatial), MSE + a small KL term. The latent scaling_factor is 1 / std of the training latents
     (as SD computed its 0.18215), stored in the VAE's config, so the pipeline scales exactly as SD's does.
  2. UNet2DConditionModel on those latents, conditioned on the frozen CLIP text tower's last hidden state
     (B, 32, 128) via clipgpt_core.models.hf_text; captions dropped to "" 10 % of the time (classifier-free guidance);
     EMA. v-prediction with a zero-terminal-SNR schedule: SD's betas keep 7 % of the signal at t = T, through
     which a small latent's mean colour (the background) leaks, so sampling from pure noise picked it at random.
     The loss weighs the latent cells an object covers (1 + object_weight)x below t = 800 (plain MSE is ~25:1
     background for a small object, which was then left out); single objects, large 3 times in 4, and half of
     each batch at t >= 500, where the outline is decided from the text.
  3. The layout UNet: stage 2's UNet with clipgpt_core.models.planner's layout map (each object's colour and shape
     one-hot over its bounding box, each cell's (u, v) place in that box, the share of the cell its silhouette
     covers, the background everywhere; 20 channels) as extra input channels whose weights start at zero, fine-tuned on scenes of 1-4 objects with each
     scene's own map beside one of its captions, object cells weighted at every t (the map fixes the background).
     Text and map are dropped apart and together (drop_text, drop_layout, drop_both), so one UNet draws from
     both, from the text alone (learned tokens, prompts the planner cannot read) and unconditionally (guidance).
  4. StableDiffusionPipeline (LayoutDiffusionPipeline after stage 3) of vae, text_encoder, tokenizer, unet and
     DPMSolverMultistepScheduler, save_pretrained with the UNet and VAE in float16 safetensors (loaded back in
     float32). The text encoder and tokenizer are the bundle's CLIP text tower, so a bundle's renderer/ leaves
     them out (load_bundle puts them back); --with-text-encoder writes a standalone pipeline.

Stages 2 and 3 render their scenes once and encode them with the frozen VAE; every step re-draws their captions
(world.describe) and their latents from the VAE's posterior, so the text varies while the VAE costs nothing per
step. Seeds are fixed; each stage has its own seeded stream.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from diffusers.training_utils import EMAModel

from clipgpt_core import world
from clipgpt_core.world.corpus import OBJECT_MIX, world_pairs, world_scenes
from clipgpt_core.errors import InputError
from clipgpt_core.models.planner import LAYOUT_CHANNELS, layout_map
from clipgpt_core.models.layout_pipeline import LayoutDiffusionPipeline
from .denoising import (draw_latents, encode_text, fit_with_ema, object_masks, optimizer_step, stage_schedule,
                        to_pixels, unet_loss)
from .loop import Resume, checkpoint_seconds, fit, run_cli, write_train_record


@dataclass
class RendererTrainConfig:
    bundle: str = "shapes"            # whose CLIP text tower conditions the UNet (frozen)
    out: str = "assets/shapes/renderer"
    with_text_encoder: bool = False   # False: leave out text_encoder/ + tokenizer/, the bundle's CLIP text tower
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    threads: int = 2                  # CPU threads; on a machine busy with other jobs, 1 is faster
    # stage 1: the autoencoder
    steps_vae: int = 1800
    batch_vae: int = 32               # crops per step
    vae_crop: int = 32                # the VAE is convolutional: it learns on crops around objects
    crops_per_image: int = 4
    lr_vae: float = 2e-3
    kl_weight: float = 1e-6           # on the KL summed over the latent, per image, beside the per-pixel MSE
    vae_channels: tuple = (16, 32)    # 64 -> 32 px: a 32x32x4 latent, 2x2 px a cell (v2: (8, 16, 32), 16x16)
    vae_norm_groups: int = 2          # >= 4 channels a group: a group of one channel erases flat colour
    # stage 2: the UNet
    steps_unet: int = 10000           # v1: 3200, v2: 4000
    batch_unet: int = 32
    lr_unet: float = 8e-4
    n_latents: int = 12000            # scenes rendered and encoded once for stage 2
    unet_channels: tuple = (16, 32, 64, 128)  # 32x32, 16x16, 8x8 and 4x4 latent cells (v2: (32, 64, 128))
    full_res_attention: bool = False  # attention at the first level too (at 32x32 it costs more than it gives)
    unet_norm_groups: int = 8
    head_dim: int = 32
    pooled_text: bool = True          # UNet addition_embed_type="text": pooled text added to the time embedding
    caption_dropout: float = 0.1      # share of captions replaced by "" (the unconditional prompt)
    ema_decay: float = 0.9995         # the ceiling; EMA warm-up (power 3/4) ramps towards it
    object_weight: float = 4.0        # extra loss weight on latent cells an object covers (0: plain MSE)
    object_weight_max_t: int = 800    # ... at timesteps below this only: the noisiest, where the background
                                      # is chosen and no object is resolved yet, keep plain MSE
    background_share: float = 0.8     # share of stage-2 captions that state the background (describe: 0.5)
    single_object_share: float = 0.8  # share of stage-2 scenes with one object (the rest: 2-4 objects)
    large_share: float = 0.75         # share of those single objects that are large (world: 0.5)
    high_t_share: float = 0.5         # share of each batch with t >= high_t_min, where the outline is decided
    high_t_min: int = 500
    prediction_type: str = "v_prediction"
    # stage 3: the layout UNet, fine-tuned from stage 2's with the layout map as extra input channels
    steps_layout: int = 2200          # 0: stop after stage 2 (a text-only StableDiffusionPipeline)
    lr_layout: float = 5e-4
    n_layout_latents: int = 8000      # multi-object scenes (the world's sizes) rendered and encoded once
    layout_object_mix: tuple = (0.3, 0.3, 0.2, 0.2)   # shares of 1-4 objects: scenes are what stage 3 is for
    drop_both: float = 0.1            # share of examples with "" and an all-zero map (guidance's unconditional)
    drop_text: float = 0.1            # ... with "" and the map (the layout alone draws the scene)
    drop_layout: float = 0.15         # ... with the text and an all-zero map (text and learned tokens alone)
    layout_high_t_share: float = 0.3
    layout_object_weight: float = 8.0   # stage 3's object weight, at every t: the map fixes the background, and
                                        # small objects' outlines are what is left to learn
    from_pipeline: str = ""           # skip stages 1-2: take the VAE and text UNet of this saved renderer
    # shared by both stages
    warmup: int = 100
    min_lr: float = 2e-5
    grad_clip: float = 1.0
    checkpoint: str = "runs/train_renderer"   # resumable state of both stages ("" = none)


# ----------------------------------------------------------------------------- components
def make_vae(cfg: RendererTrainConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=world.CANVAS,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels), layers_per_block=1, norm_num_groups=cfg.vae_norm_groups,
        mid_block_add_attention=False)  # convolutions alone keep every outline (docs/results.md, Render)


def make_unet(cfg: RendererTrainConfig, cross_attention_dim: int, latent_size: int) -> UNet2DConditionModel:
    ch = tuple(cfg.unet_channels)
    n = len(ch)
    # diffusers' UNet2DConditionModel reads attention_head_dim as the number of heads (a legacy name)
    heads = tuple(max(1, c // cfg.head_dim) for c in ch)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=ch,
        down_block_types=tuple("CrossAttnDownBlock2D" if i or cfg.full_res_attention else "DownBlock2D"
                               for i in range(n)),
        up_block_types=tuple("CrossAttnUpBlock2D" if i < n - 1 or cfg.full_res_attention else "UpBlock2D"
                             for i in range(n)),
        cross_attention_dim=cross_attention_dim, attention_head_dim=heads, norm_num_groups=cfg.unet_norm_groups,
        # the text also as a global signal: an attention-pooled text embedding added to the timestep
        # embedding, so every ResNet block sees it (colour and background are global decisions)
        addition_embed_type="text" if cfg.pooled_text else None,
        addition_embed_type_num_heads=max(1, cross_attention_dim // cfg.head_dim))


def make_scheduler(cfg: RendererTrainConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type=cfg.prediction_type, rescale_betas_zero_snr=True,
                         timestep_spacing="trailing", clip_sample=False,
                         steps_offset=1)   # unused by "trailing"; 1 is what StableDiffusionPipeline expects


def object_crops(x: torch.Tensor, scenes, size: int, per_image: int, rng: random.Random) -> torch.Tensor:
    """(B, 3, 64, 64) -> (B * per_image, 3, size, size) crops near objects, on the latent grid: a flat
    background alone teaches the VAE little, and colour is learned from the objects."""
    if size >= x.shape[-1]:
        return x
    out = []
    for image, scene in zip(x, scenes):
        for _ in range(per_image):
            o = rng.choice(scene.objects)
            left = int(min(max(o.cx + rng.uniform(-8, 8) - size / 2, 0), x.shape[-1] - size)) // 4 * 4
            top = int(min(max(o.cy + rng.uniform(-8, 8) - size / 2, 0), x.shape[-2] - size)) // 4 * 4
            out.append(image[:, top:top + size, left:left + size])
    return torch.stack(out)


def vae_loss(vae, x: torch.Tensor, kl_weight: float, generator=None) -> tuple[torch.Tensor, float, float]:
    """x (B, 3, 64, 64) in [-1, 1] -> (loss, mse, kl per image)."""
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator)).sample               # (B, 3, 64, 64)
    mse = F.mse_loss(rec, x)
    kl = post.kl().mean()                                          # KL summed over the latent, per image
    return mse + kl_weight * kl, mse.item(), kl.item()


def train_vae(cfg: RendererTrainConfig, log: list | None = None, progress: bool = True) -> AutoencoderKL:
    rng = random.Random(cfg.seed)
    vae = make_vae(cfg).to(cfg.device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr_vae, weight_decay=0.0)

    per_image = cfg.crops_per_image if cfg.vae_crop < world.CANVAS else 1

    def step() -> float:
        # scenes with more objects than stage 2's: more colour per crop
        images, _, scenes, _ = world_pairs(rng, max(1, cfg.batch_vae // per_image), object_mix=(0.2, 0.3, 0.3, 0.2))
        x = object_crops(to_pixels(images), scenes, cfg.vae_crop, per_image, rng)     # (B, 3, 32, 32)
        loss, mse, kl = vae_loss(vae, x.to(cfg.device), cfg.kl_weight)
        optimizer_step(opt, vae.parameters(), loss, cfg.grad_clip)
        if log is not None:
            log.append({"loss": loss.item(), "mse": mse, "kl": kl})
        return mse

    fit(step, opt, stage_schedule(cfg.steps_vae, cfg.lr_vae, cfg), "train VAE (mse)", disable=not progress,
        resume=Resume(f"{cfg.checkpoint}/vae", {"vae": vae}, rng) if cfg.checkpoint else None)
    return vae.eval()


@torch.no_grad()
def encode_scenes(vae, cfg: RendererTrainConfig, progress: bool = True, layout_stage: bool = False):
    """Render scenes (random styles) and encode them -> scenes, posterior mean and std (N, 4, 32, 32) each,
    and object masks (N, 1, 32, 32), on the CPU. Stage 2 (cfg.n_latents, mostly single objects; sets
    vae.config.scaling_factor = 1 / std of sampled latents) or stage 3 (cfg.n_layout_latents, scenes of
    cfg.layout_object_mix; the VAE's scaling factor stays)."""
    rng = random.Random(cfg.seed + (3 if layout_stage else 1))
    scenes, means, stds = [], [], []
    from tqdm import tqdm
    if layout_stage:
        n, mix, large_share = cfg.n_layout_latents, cfg.layout_object_mix, 0.0
    else:
        rest = (1 - cfg.single_object_share) / sum(OBJECT_MIX[1:])       # 2-4 objects keep their proportions
        # single objects large cfg.large_share of the time: a large object is where the outline is drawn
        n, mix, large_share = cfg.n_latents, (cfg.single_object_share, *(x * rest for x in OBJECT_MIX[1:])), cfg.large_share
    for i in tqdm(range(0, n, 256), desc="encode scenes", disable=not progress):
        images, batch_scenes = world_scenes(rng, min(256, n - i), object_mix=mix, large_share=large_share)
        post = vae.encode(to_pixels(images).to(cfg.device)).latent_dist
        scenes += batch_scenes
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    if not layout_stage:
        g = torch.Generator().manual_seed(cfg.seed)
        sample = mean + std * torch.randn(mean.shape, generator=g)
        vae.register_to_config(scaling_factor=float(1 / sample.std()))
    return scenes, mean, std, object_masks(scenes, mean.shape[-1])


def captions_for(cfg: RendererTrainConfig, rng: random.Random):
    """scene -> a random true caption, stating the background cfg.background_share of the time."""
    force_background = max(0.0, (cfg.background_share - 0.5) / 0.5)   # describe() states it half the time

    def caption(scene) -> str:
        d = world.describe(scene, rng)
        if d.background is None and rng.random() < force_background:
            d = dataclasses.replace(d, background=scene.background)
        return world.caption_text(d, rng)
    return caption


def stage_state(cfg: RendererTrainConfig, unet, lr: float, stream: int):
    """A UNet stage's own seeded streams (Python's for data, torch's for noise), its EMA and its optimizer."""
    return (random.Random(cfg.seed + stream), torch.Generator().manual_seed(cfg.seed + stream),
            EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4),
            torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01))


def train_unet(cfg: RendererTrainConfig, vae, tokenizer, text_encoder, data, log: list | None = None,
               progress: bool = True) -> UNet2DConditionModel:
    scenes, mean, std, masks = data
    scheduler = make_scheduler(cfg)
    unet = make_unet(cfg, text_encoder.config.hidden_size, mean.shape[-1]).to(cfg.device).train()
    rng, g, ema, opt = stage_state(cfg, unet, cfg.lr_unet, stream=2)
    scale = vae.config.scaling_factor
    caption = captions_for(cfg, rng)

    def loss() -> torch.Tensor:
        idx = [rng.randrange(len(scenes)) for _ in range(cfg.batch_unet)]
        captions = [caption(scenes[i]) if rng.random() >= cfg.caption_dropout else "" for i in idx]
        z, t, noise = draw_latents(data, idx, scale, scheduler, cfg.high_t_share, cfg.high_t_min, g)
        text = encode_text(tokenizer, text_encoder, captions)                             # (B, 32, 128)
        weight = None
        if cfg.object_weight:
            weight = 1 + cfg.object_weight * masks[idx] * (t < cfg.object_weight_max_t).float()[:, None, None, None]
            weight = weight.to(cfg.device)
        return unet_loss(unet, scheduler, z.to(cfg.device), text, t.to(cfg.device), noise.to(cfg.device), weight)

    return fit_with_ema(unet, opt, ema, g, rng, loss, stage_schedule(cfg.steps_unet, cfg.lr_unet, cfg), "train UNet",
                        cfg, "unet", log, progress)


def with_layout_input(unet: UNet2DConditionModel, channels: int) -> UNet2DConditionModel:
    """The same UNet taking 4 + `channels` input channels; the new channels' input weights start at zero,
    so it starts out drawing exactly what the text UNet draws (as SD's inpainting UNet was made from SD's)."""
    if unet.config.in_channels != 4:
        raise InputError(f"the UNet already takes {unet.config.in_channels} input channels: stage 3 starts from a "
                         f"text-only renderer (stage 2's), not a layout one")
    new = UNet2DConditionModel.from_config({**unet.config, "in_channels": 4 + channels})
    state = unet.state_dict()
    w = state["conv_in.weight"]                                                   # (out, 4, 3, 3)
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], channels, *w.shape[2:])], dim=1)
    new.load_state_dict(state)
    return new.to(unet.device)


def train_layout_unet(cfg: RendererTrainConfig, vae, tokenizer, text_encoder, text_unet, data, log: list | None = None,
                      progress: bool = True) -> UNet2DConditionModel:
    """Stage 3: stage 2's UNet fine-tuned to read the layout map of each scene's own objects beside its caption.
    Text and map are dropped apart and together (cfg.drop_*), so the one UNet draws from both, from the map
    alone, from the text alone (learned tokens, prompts the planner cannot read) and unconditionally."""
    scenes, mean, std, masks = data
    scheduler = make_scheduler(cfg)
    unet = with_layout_input(text_unet, LAYOUT_CHANNELS).to(cfg.device).train()
    rng, g, ema, opt = stage_state(cfg, unet, cfg.lr_layout, stream=4)
    scale = vae.config.scaling_factor
    caption = captions_for(cfg, rng)

    def loss() -> torch.Tensor:
        idx = [rng.randrange(len(scenes)) for _ in range(cfg.batch_unet)]
        batch = [scenes[i] for i in idx]
        drops = [rng.random() for _ in idx]
        both, text_only = cfg.drop_both, cfg.drop_both + cfg.drop_text
        map_only = text_only + cfg.drop_layout
        captions = ["" if r < text_only else caption(s) for r, s in zip(drops, batch)]
        layout = torch.from_numpy(layout_map([None if r < both or text_only <= r < map_only else s
                                              for r, s in zip(drops, batch)], mean.shape[-1]))   # (B, 19, 32, 32)
        z, t, noise = draw_latents(data, idx, scale, scheduler, cfg.layout_high_t_share, cfg.high_t_min, g)
        text = encode_text(tokenizer, text_encoder, captions)                             # (B, 32, 128)
        weight = (1 + cfg.layout_object_weight * masks[idx]).to(cfg.device)
        return unet_loss(unet, scheduler, z.to(cfg.device), text, t.to(cfg.device), noise.to(cfg.device), weight,
                         layout.to(cfg.device))

    return fit_with_ema(unet, opt, ema, g, rng, loss, stage_schedule(cfg.steps_layout, cfg.lr_layout, cfg),
                        "train layout UNet", cfg, "layout", log, progress)


def assemble(vae, text_encoder, tokenizer, unet, cfg: RendererTrainConfig) -> StableDiffusionPipeline:
    """A real StableDiffusionPipeline of our components (LayoutDiffusionPipeline, its subclass, when the UNet
    reads a layout map); sampling with DPM-Solver++ (2M), trailing timesteps so that sampling starts at t = T,
    where the zero-SNR schedule put pure noise."""
    sampler = DPMSolverMultistepScheduler.from_config(make_scheduler(cfg).config)
    pipeline = LayoutDiffusionPipeline if unet.config.in_channels > 4 else StableDiffusionPipeline
    return pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sampler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def train(cfg: RendererTrainConfig, clip=None, progress: bool = True) -> StableDiffusionPipeline:
    """Both stages and the pipeline, saved to cfg.out. `clip` (a ClipEncoder) overrides cfg.bundle's."""
    from clipgpt_core.models.hf_text import text_encoder_from_clip, tokenizer_from_clip
    from clipgpt_core.models.renderer import save_pipeline
    torch.manual_seed(cfg.seed)
    if cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)
    if clip is None:
        from clipgpt_core.bundle import load_bundle
        clip = load_bundle(cfg.bundle, strict=False).clip
    text_encoder = text_encoder_from_clip(clip).to(cfg.device).requires_grad_(False)
    tokenizer = tokenizer_from_clip(clip)
    t0 = time.time()
    vae_log, unet_log, layout_log = [], [], []
    if cfg.from_pipeline:
        vae = AutoencoderKL.from_pretrained(f"{cfg.from_pipeline}/vae", torch_dtype=torch.float32).to(cfg.device)
        unet = UNet2DConditionModel.from_pretrained(f"{cfg.from_pipeline}/unet", torch_dtype=torch.float32)
        vae, unet = vae.eval().requires_grad_(False), unet.to(cfg.device)
        t_vae = t_encode = t_unet = 0.0
    else:
        vae = train_vae(cfg, vae_log, progress).requires_grad_(False)
        t_vae = time.time() - t0
        data = encode_scenes(vae, cfg, progress)
        t_encode = time.time() - t0 - t_vae
        unet = train_unet(cfg, vae, tokenizer, text_encoder, data, unet_log, progress)
        t_unet = time.time() - t0 - t_vae - t_encode
    t_layout = time.time()
    if cfg.steps_layout:
        data = encode_scenes(vae, cfg, progress, layout_stage=True)
        unet = train_layout_unet(cfg, vae, tokenizer, text_encoder, unet, data, layout_log, progress)
    t_layout = time.time() - t_layout
    if cfg.checkpoint:   # a resumed run: each stage's time over every session, not only this one's
        if not cfg.from_pipeline:
            t_vae = max(t_vae, checkpoint_seconds(f"{cfg.checkpoint}/vae"))
            t_unet = max(t_unet, checkpoint_seconds(f"{cfg.checkpoint}/unet"))
        t_layout = max(t_layout, checkpoint_seconds(f"{cfg.checkpoint}/layout"))
    pipe = assemble(vae, text_encoder, tokenizer, unet, cfg)
    save_pipeline(pipe, cfg.out, cfg.with_text_encoder)

    def tail(log, key):   # mean of the last 10 % of steps
        values = [r[key] for r in log[-max(1, len(log) // 10):]]
        return round(float(np.mean(values)), 5) if values else None
    spent = t_vae + t_encode + t_unet + t_layout
    write_train_record(cfg.out, cfg, spent, clip=clip.model_name,
                       scaling_factor=vae.config.scaling_factor,
                       vae_final_mse=tail(vae_log, "mse"), vae_final_kl=tail(vae_log, "kl"),
                       unet_final_loss=tail(unet_log, "loss"), layout_final_loss=tail(layout_log, "loss"),
                       seconds={"vae": round(t_vae, 1), "encode": round(t_encode, 1), "unet": round(t_unet, 1),
                                "layout": round(t_layout, 1)},
                       seconds_per_step={"vae": round(t_vae / max(1, cfg.steps_vae), 3),
                                         "unet": round(t_unet / max(1, cfg.steps_unet), 3),
                                         "layout": round(t_layout / max(1, cfg.steps_layout), 3)},
                       params={"vae": sum(p.numel() for p in vae.parameters()),
                               "unet": sum(p.numel() for p in unet.parameters())})
    return pipe


def main(argv=None):
    run_cli(RendererTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
