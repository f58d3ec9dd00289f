"""Random-init stand-ins for the seeds' published files, built by the published code's own classes and saved in
the published formats: small for tests, full size for benchmarks (random weights give real timings and memory).

    clip_gpt_file(path, width=64, layers=2)      # torch.save of a clip_gpt.clip_gpt.CLIPGPT around clip.model's tower
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from transformers import GPT2Config

HERE = Path(__file__).resolve().parent


def published_clip_gpt():
    """The published module, importable as `clip_gpt.clip_gpt` (the path its pickles name)."""
    if "clip_gpt.clip_gpt" not in sys.modules:
        package = types.ModuleType("clip_gpt")
        package.__path__ = [str(HERE / "clip_gpt")]
        sys.modules["clip_gpt"] = package
        spec = importlib.util.spec_from_file_location("clip_gpt.clip_gpt", HERE / "clip_gpt" / "clip_gpt.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        package.clip_gpt = module
    return sys.modules["clip_gpt.clip_gpt"]


def openai_clip(width: int = 64, layers: int = 2, heads: int = 2, embed_dim: int = 32, vision_width: int = 64,
                vision_layers: int = 1, image_resolution: int = 32, patch: int = 16, seed: int = 0,
                fp16: bool = False):
    """OpenAI CLIP's own clip.model.CLIP (clip-anytorch), random init; fp16=True converts it as OpenAI's
    released weights are (clip.model.convert_weights)."""
    import clip.model
    torch.manual_seed(seed)
    model = clip.model.CLIP(embed_dim, image_resolution, vision_layers, vision_width, patch, 77, 49408,
                            width, heads, layers)
    with torch.no_grad():     # CLIP's init leaves the text tower near-uniform; spread it so outputs differ by token
        model.token_embedding.weight.normal_(std=0.5)
    if fp16:
        clip.model.convert_weights(model)
    return model.eval()


def clip_gpt_model(width: int = 64, layers: int = 2, heads: int = 2, seed: int = 0):
    """The published CLIPGPT around a random clip.model text tower, its deembed head random as published."""
    module = published_clip_gpt()
    base = openai_clip(width, layers, heads, seed=seed)
    torch.manual_seed(seed + 1)
    return module.CLIPGPT(clip_model=base).eval()


def clip_gpt_file(path: str | Path, width: int = 64, layers: int = 2, heads: int = 2, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> Path:
    """torch.save(model) of the published class, as clip_gpt.pt is: a whole pickled module."""
    model = clip_gpt_model(width, layers, heads, seed).to(dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, path)
    return path


def open_clip_folder(path: str | Path, model, image_size: int = 32, patch: int = 16, vision_width: int = 64,
                     vision_layers: int = 1) -> Path:
    """An OpenAI clip.model.CLIP saved in open_clip's Hub layout (open_clip_config.json without a model name, as
    the Hub's are, + open_clip_model.safetensors): what timm/vit_*_clip_*.openai repos hold. open_clip's CLIP
    uses OpenAI's parameter names, so the state dict goes in as it is."""
    import json
    from safetensors.torch import save_file
    text = model.transformer
    config = {"model_cfg": {"embed_dim": int(model.text_projection.shape[1]), "quick_gelu": True,
                            "vision_cfg": {"image_size": image_size, "layers": vision_layers, "width": vision_width,
                                           "patch_size": patch},
                            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text.width,
                                         "heads": text.resblocks[0].attn.num_heads, "layers": text.layers}},
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return path


def stable_diffusion_folder(path: str | Path, clip_encoder) -> Path:
    """Stable Diffusion 1.5's pipeline classes at tiny random sizes, its text encoder the CLIP's text tower (as SD
    1.5's is OpenAI ViT-L/14's), saved by save_pretrained in safetensors: the layout of the Hub's SD 1.5."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from clipgpt_core.models.hf_text import text_encoder_from_clip, tokenizer_from_clip
    te = text_encoder_from_clip(clip_encoder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=te.config.hidden_size, norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer_from_clip(clip_encoder), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


# the modules latent-consistency/lcm-lora-sdv1-5 adapts (diffusers' train_lcm_distill_lora_sd_wds.py, the peft
# target_modules the LCM-LoRA was trained with), at rank 64: 67.3M parameters on SD 1.5's UNet
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def lcm_lora_file(path: str | Path, unet, rank: int = 64, std: float = 0.01, seed: int = 0,
                  dtype: torch.dtype = torch.float16) -> Path:
    """A random LoRA with the LCM-LoRA's shapes for `unet` (rank `rank` on LCM_LORA_TARGETS), saved as
    diffusers/peft's pytorch_lora_weights.safetensors (`unet.<module>.lora_A.weight` (r, in[, kh, kw]) and
    `.lora_B.weight` (out, r[, 1, 1]), float16 as published). B is random too, so fusing it changes the
    UNet (peft would start B at zero). -> the file."""
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, m in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in LCM_LORA_TARGETS):
            continue
        if isinstance(m, torch.nn.Linear):
            a, b = (rank, m.in_features), (m.out_features, rank)
        elif isinstance(m, torch.nn.Conv2d):
            a, b = (rank, m.in_channels, *m.kernel_size), (m.out_channels, rank, 1, 1)
        else:
            continue
        state[f"unet.{name}.lora_A.weight"] = (torch.randn(a, generator=gen) * std).to(dtype)
        state[f"unet.{name}.lora_B.weight"] = (torch.randn(b, generator=gen) * std).to(dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path, metadata={"format": "pt"})
    return path


def taesd_folder(path: str | Path, seed: int = 0) -> Path:
    """madebyollin/taesd's layout (config.json + diffusion_pytorch_model.safetensors): diffusers' AutoencoderTiny
    at its default config (TAESD's: 2.4M parameters), random init."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(seed)
    AutoencoderTiny().save_pretrained(path, safe_serialization=True)
    config = Path(path) / "config.json"       # block_out_channels: set by its __init__, not one of its arguments
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items()
                                  if k != "block_out_channels"}, indent=2))
    return Path(path)


# GPT-2's byte-level BPE writes a space as this; a toy vocabulary over a few words, for tests
G = "\u0120"                         # GPT-2's byte-level BPE writes a space as this
MERGES = [(G, "a"), (G, "d"), ("o", "g"), (G + "d", "og"), (G, "c"), ("a", "t"), (G + "c", "at"), (G, "o"),
          (G + "o", "n"), (G, "t"), ("h", "e"), (G + "t", "he")]


def write_gpt2_folder(folder, **sizes):
    """GPT-2's config.json and a toy byte-level BPE (vocab.json, merges.txt), as transformers' own tests write
    theirs; "!" is token 0, as in GPT-2."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = list("!.,abcdefghijklmnopqrstuvwxyz") + [G] + ["".join(m) for m in MERGES] + ["<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=96, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3,
                     bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1, **sizes)
    cfg.save_pretrained(folder)
    return cfg


def save_as_published(model, path):
    """torch.save of the state dict, with the causal-mask buffers transformers 4.11 kept in it."""
    state = dict(model.state_dict())
    n = model.gpt.config.n_positions
    for i in range(model.gpt.config.n_layer):
        state[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, path)
    return state
