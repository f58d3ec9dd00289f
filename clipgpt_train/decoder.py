"""Train the unCLIP decoder: the built-in renderer's UNet fine-tuned to draw a CLIP image vector itself (issue 40).

    python -m clipgpt_train.decoder                                   # -> runs/decoder (checkpoints: runs/train_decoder)
    python -m clipgpt_train.decoder --out assets/shapes/decoder       # into the bundle
    python -m clipgpt_train.decoder --steps 5 --n-latents 64 --out /tmp/d --checkpoint /tmp/d_ck   # smoke

Conditioning as Kandinsky 2.2 / Stable unCLIP built into diffusers' UNet2DConditionModel:
`encoder_hid_dim_type="image_proj"` projects the (normalised) CLIP image vector into 32 context tokens that the
cross-attention reads where the renderer read text, and `addition_embed_type="image"` adds a projection of it to
the timestep embedding, so every ResNet block sees it (colour and background are global decisions). The vector is
replaced by zeros cfg.vector_dropout of the time: the unconditional branch of classifier-free guidance.

Initialisation: every weight of the shipped renderer's layout UNet (cfg.renderer/unet) whose name and shape fit,
its conv_in's first 4 input channels (the latent; the 20 layout channels are dropped), so the decoder starts
from a UNet that already draws ShapesWorld; the new timestep branch starts at zero (its LayerNorm gain), so at
step 0 the network is the renderer's with new context tokens. The VAE is the renderer's, frozen; the vectors are
the bundle's frozen CLIP image tower (clip.encode_images) of the very images encoded.

Data: cfg.n_latents scenes of 1-4 objects (cfg.object_mix), rendered once in random styles, VAE-encoded (posterior
mean and std) and CLIP-encoded once, cached beside the checkpoint (data.safetensors) so a resumed run skips it.
Loss, schedule and loop as the renderer's UNet stages (clipgpt_train/denoising.py): v-prediction on a
zero-terminal-SNR schedule, object cells weighted, EMA, AdamW, warm-up + cosine; a checkpoint every
cfg.checkpoint_every steps under cfg.checkpoint, and running the same command again continues where it stopped
and ends with the same weights.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from clipgpt_core.world.corpus import world_scenes
from .denoising import draw_latents, object_masks, optimizer_step, stage_schedule, to_pixels, unet_loss
from .loop import Resume, StateOf, fit, run_cli, write_train_record
from .renderer import make_scheduler


@dataclass
class DecoderTrainConfig:
    bundle: str = "shapes"                    # whose CLIP image tower makes the vectors (frozen)
    renderer: str = "assets/shapes/renderer"  # whose UNet starts the decoder and whose VAE it reuses (frozen)
    out: str = "runs/decoder"                 # the UnclipDecoderPipeline (save_pretrained); the bundle's: assets/shapes/decoder
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    threads: int = 1                          # CPU threads (1 leaves a core to others on a shared machine)
    steps: int = 3600
    batch: int = 32                           # the renderer's stage 3
    lr: float = 5e-4                          # the renderer's stage 3
    warmup: int = 100
    min_lr: float = 2e-5
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    n_latents: int = 8000                     # scenes rendered and encoded once
    object_mix: tuple = (0.25, 0.35, 0.2, 0.2)   # shares of 1-4 objects
    vector_dropout: float = 0.1               # share of vectors replaced by zeros (guidance's unconditional)
    object_weight: float = 4.0                # extra loss weight on latent cells an object covers ...
    object_weight_max_t: int = 800            # ... below this timestep (the renderer's stage 2)
    high_t_share: float = 0.3                 # share of each batch with t >= high_t_min, where the layout is decided
    high_t_min: int = 500
    prediction_type: str = "v_prediction"
    checkpoint: str = "runs/train_decoder"    # resumable state and the data cache ("" = none)
    checkpoint_every: int = 300               # steps between checkpoints (~4-6 min at 0.8-1.2 s a step)


# ----------------------------------------------------------------------------- components
def decoder_unet_from(renderer_unet: UNet2DConditionModel, clip_dim: int) -> UNet2DConditionModel:
    """A UNet of the renderer's architecture reading the latent alone (4 channels) and conditioned on a CLIP image
    vector (clip_dim) as context tokens and as a timestep-embedding addition; every renderer weight whose name and
    shape fit is copied, conv_in's latent channels too; the timestep branch starts at zero."""
    latent = 4
    config = {**renderer_unet.config, "in_channels": latent, "addition_embed_type": "image",
              "encoder_hid_dim_type": "image_proj", "encoder_hid_dim": clip_dim}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(config)
    theirs, mine = renderer_unet.state_dict(), unet.state_dict()
    theirs["conv_in.weight"] = theirs["conv_in.weight"][:, :latent]
    copied = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    unet.load_state_dict(copied, strict=False)
    with torch.no_grad():
        unet.add_embedding.image_norm.weight.zero_()   # adds nothing to the timestep embedding at step 0
    return unet


def assemble(vae, unet, cfg: DecoderTrainConfig):
    from clipgpt_core.models.unclip_pipeline import UnclipDecoderPipeline
    sampler = DPMSolverMultistepScheduler.from_config(make_scheduler(cfg).config)
    return UnclipDecoderPipeline(vae=vae, unet=unet, scheduler=sampler)


# ----------------------------------------------------------------------------- data
def data_key(cfg: DecoderTrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("bundle", "renderer", "seed", "n_latents", "object_mix")}


@torch.no_grad()
def encode_data(cfg: DecoderTrainConfig, vae, clip, progress: bool = True):
    """-> (posterior mean, std (N, 4, 32, 32), object masks (N, 1, 32, 32), CLIP vectors (N, d)), cached under
    cfg.checkpoint/data.safetensors (the same key: loaded, not recomputed)."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm
    cache = Path(cfg.checkpoint) / "data.safetensors" if cfg.checkpoint else None
    key = _cache_key(cfg)
    if cache is not None and _cached(cfg):
        d = load_file(cache)
        return d["mean"], d["std"], d["masks"], d["vectors"]
    rng = random.Random(cfg.seed + 5)
    means, stds, masks, vectors = [], [], [], []
    for i in tqdm(range(0, cfg.n_latents, 256), desc="render + encode scenes", disable=not progress):
        images, scenes = world_scenes(rng, min(256, cfg.n_latents - i), object_mix=cfg.object_mix)
        post = vae.encode(to_pixels(images).to(cfg.device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
        masks.append(object_masks(scenes, post.mean.shape[-1]))
        vectors.append(torch.from_numpy(clip.encode_images(images)).float())
    d = {"mean": torch.cat(means), "std": torch.cat(stds), "masks": torch.cat(masks), "vectors": torch.cat(vectors)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in d.items()}, cache, metadata={"key": key})
    return d["mean"], d["std"], d["masks"], d["vectors"]


def _cache_key(cfg: DecoderTrainConfig) -> str:
    return json.dumps(json.loads(json.dumps(data_key(cfg))), sort_keys=True)


def _cached(cfg: DecoderTrainConfig) -> bool:
    from safetensors import safe_open
    cache = Path(cfg.checkpoint) / "data.safetensors"
    if not cache.is_file():
        return False
    with safe_open(cache, "pt") as f:
        return (f.metadata() or {}).get("key") == _cache_key(cfg)


def _encode_to_cache(cfg: DecoderTrainConfig, progress: bool) -> None:
    from clipgpt_core.bundle import load_bundle
    torch.set_num_threads(cfg.threads)
    vae = AutoencoderKL.from_pretrained(f"{cfg.renderer}/vae", torch_dtype=torch.float32).to(cfg.device).eval()
    encode_data(cfg, vae, load_bundle(cfg.bundle, strict=False).clip, progress)


# ----------------------------------------------------------------------------- training
def train_decoder(cfg: DecoderTrainConfig, vae, unet, data, log: list, progress: bool = True):
    mean, std, masks, vectors = data
    scheduler = make_scheduler(cfg)
    unet = unet.to(cfg.device).train()
    rng, g = random.Random(cfg.seed + 6), torch.Generator().manual_seed(cfg.seed + 6)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    scale = vae.config.scaling_factor
    log_file = Path(cfg.checkpoint) / "log.jsonl" if cfg.checkpoint else None
    started = time.time()

    def step(i: int) -> float:
        idx = [rng.randrange(len(mean)) for _ in range(cfg.batch)]
        keep = torch.tensor([rng.random() >= cfg.vector_dropout for _ in idx], dtype=torch.float32)
        cond = vectors[idx] * keep[:, None]                                              # (B, d); zeros: dropped
        z, t, noise = draw_latents((None, mean, std, None), idx, scale, scheduler, cfg.high_t_share,
                                   cfg.high_t_min, g)
        weight = 1 + cfg.object_weight * masks[idx] * (t < cfg.object_weight_max_t).float()[:, None, None, None]
        loss = unet_loss(lambda x, ts, _: unet(x, ts, encoder_hidden_states=None,
                                               added_cond_kwargs={"image_embeds": cond.to(cfg.device)}),
                         scheduler, z.to(cfg.device), None, t.to(cfg.device), noise.to(cfg.device),
                         weight.to(cfg.device))
        optimizer_step(opt, unet.parameters(), loss, cfg.grad_clip)
        ema.step(unet.parameters())
        log.append(loss.item())
        if log_file is not None and (i + 1) % 50 == 0:
            with log_file.open("a") as f:
                f.write(json.dumps({"step": i + 1, "loss": round(sum(log[-50:]) / len(log[-50:]), 5),
                                    "s_per_step_session": round((time.time() - started) / len(log), 3)}) + "\n")
        return loss.item()

    state = {"unet": unet, "ema": StateOf.ema(ema), "noise": StateOf.generator(g)}
    resume = Resume(cfg.checkpoint, state, rng, every=cfg.checkpoint_every) if cfg.checkpoint else None
    stage = stage_schedule(cfg.steps, cfg.lr, cfg)
    stage.recipe.pop("checkpoint_every")              # how often it saves is not what it trains
    fit(step, opt, stage, "train decoder", disable=not progress, resume=resume,
        pass_step=True)
    ema.copy_to(unet.parameters())
    return unet.eval(), (resume.seconds if resume else time.time() - started)


def train(cfg: DecoderTrainConfig, clip=None, progress: bool = True):
    """-> the UnclipDecoderPipeline, saved to cfg.out. `clip` (a ClipEncoder) overrides cfg.bundle's."""
    from clipgpt_core.models.renderer import save_pipeline
    torch.manual_seed(cfg.seed)
    if cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)
    if clip is None:
        from clipgpt_core.bundle import load_bundle
        clip = load_bundle(cfg.bundle, strict=False).clip
    t0 = time.time()
    vae = AutoencoderKL.from_pretrained(f"{cfg.renderer}/vae", torch_dtype=torch.float32)
    vae = vae.to(cfg.device).eval().requires_grad_(False)
    renderer_unet = UNet2DConditionModel.from_pretrained(f"{cfg.renderer}/unet", torch_dtype=torch.float32)
    if cfg.checkpoint and not _cached(cfg):
        # the scenes are encoded in a child process, and every session trains on the cache: a run started fresh
        # and one resumed then hold the same process history, so their float arithmetic matches bit for bit
        # (encoding in-process left the first session's steps ~1e-7 off a resumed one's)
        import multiprocessing
        child = multiprocessing.get_context("spawn").Process(target=_encode_to_cache, args=(cfg, progress))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"encoding the training scenes failed (exit code {child.exitcode})")
    data = encode_data(cfg, vae, clip, progress)
    t_encode = time.time() - t0
    torch.manual_seed(cfg.seed)        # the new layers' init: the same whether the data came from the cache or not
    unet = decoder_unet_from(renderer_unet, data[3].shape[1])
    log: list = []
    unet, seconds = train_decoder(cfg, vae, unet, data, log, progress)
    pipe = assemble(vae, unet, cfg)
    save_pipeline(pipe, cfg.out)
    tail = log[-max(1, len(log) // 10):]
    write_train_record(cfg.out, cfg, time.time() - t0, clip=clip.model_name, encode_seconds=round(t_encode, 1),
                       train_seconds=round(seconds, 1), seconds_per_step=round(seconds / max(1, cfg.steps), 3),
                       final_loss=round(sum(tail) / len(tail), 5) if tail else None,
                       params=sum(p.numel() for p in unet.parameters()))
    return pipe


def export_checkpoint(cfg: DecoderTrainConfig, out: str) -> str:
    """The EMA weights of cfg.checkpoint's latest checkpoint as a pipeline in `out` (a look at a run in progress):
        python -c "from clipgpt_train.decoder import *; export_checkpoint(DecoderTrainConfig(), 'runs/decoder_ck')"
    """
    from safetensors.torch import load_file
    from clipgpt_core.models.renderer import save_pipeline
    vae = AutoencoderKL.from_pretrained(f"{cfg.renderer}/vae", torch_dtype=torch.float32).eval()
    renderer_unet = UNet2DConditionModel.from_pretrained(f"{cfg.renderer}/unet", torch_dtype=torch.float32)
    tensors = load_file(Path(cfg.checkpoint) / "checkpoint.safetensors")
    unet = decoder_unet_from(renderer_unet, tensors["unet.encoder_hid_proj.image_embeds.weight"].shape[1])
    with torch.no_grad():
        for i, p in enumerate(unet.parameters()):
            p.copy_(tensors[f"ema.shadow.{i}"])
    save_pipeline(assemble(vae, unet.eval(), cfg), out)
    step = json.loads((Path(cfg.checkpoint) / "checkpoint.json").read_text())["step"]
    (Path(out) / "checkpoint_step.txt").write_text(f"{step}\n")
    return out


def main(argv=None):
    run_cli(DecoderTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
