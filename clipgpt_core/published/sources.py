"""Where each published piece lives, what it is, its licence and size: one table that downloads, offline
messages, `clipgpt bundle --published` and the README read.

Sizes are the published files' where known (Content-Length checked on download), else None (the size is then
checked against what the server announces)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    name: str                     # how commands name it: clipgpt fetch NAME
    what: str
    kind: str                     # "url": one file by its URL; "hub": files of a Hugging Face Hub repo
    location: str                 # the URL, or the Hub repo id
    files: tuple[str, ...] = ()   # hub: the files (glob patterns) to take; url: the file name to save as
    size: int | None = None       # bytes, when one file and known
    licence: str = ""
    note: str = ""
    open_clip: str = ""           # for a CLIP: the open_clip ARCH/TAG it is
    extra: dict = field(default_factory=dict)

    def fetch_command(self) -> str:
        return f"clipgpt fetch {self.name}"


SD15_FILES = ("model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
              "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors")

SOURCES = {s.name: s for s in [
    Source("clip-gpt", "seed 000's CLIP GPT: a GPT over CLIP BPE tokens, trained on ~12M LAION-400M captions, "
           "initialised from an OpenAI CLIP text tower (a whole pickled clip_gpt.clip_gpt.CLIPGPT module)",
           "url", "https://clip-gpt.s3.us-west-1.amazonaws.com/clip_gpt.pt", ("clip_gpt.pt",),
           licence="MIT (its setup.py; the repository has no licence file)",
           note="161M parameters if 768 wide (ViT-L/14's text tower), 88.5M if 512 wide: the converter reads the width "
                "from the tensors"),
    Source("clip-vit-l-14", "OpenAI CLIP ViT-L/14: the CLIP GPT prior's and SD 1.5's text tower, and the bundle's CLIP",
           "hub", "timm/vit_large_patch14_clip_224.openai", ("open_clip_config.json", "open_clip_model.safetensors"),
           licence="MIT", open_clip="ViT-L-14/openai"),
    Source("clip-vit-b-32", "OpenAI CLIP ViT-B/32: the CLIP that ClipCap's published captioners read",
           "hub", "timm/vit_base_patch32_clip_224.openai", ("open_clip_config.json", "open_clip_model.safetensors"),
           licence="MIT", open_clip="ViT-B-32/openai"),
    Source("gpt2", "GPT-2 small's config and tokenizer (ClipCap's checkpoints hold all its weights)",
           "hub", "openai-community/gpt2", ("config.json", "vocab.json", "merges.txt"),
           licence="MIT"),
    Source("clipcap-coco", "ClipCap, MLP mapper + fine-tuned GPT-2, trained on COCO captions (prefix 10, ViT-B/32)",
           "hub", "akhaliq/CLIP-prefix-captioning-COCO-weights", ("coco_weights.pt",), licence="MIT",
           note="a mirror of the Google Drive file rmokady/CLIP_prefix_caption's README links"),
    Source("clipcap-conceptual", "ClipCap, MLP mapper + fine-tuned GPT-2, trained on Conceptual Captions "
           "(prefix 10, ViT-B/32)", "hub", "akhaliq/CLIP-prefix-captioning-conceptual-weights",
           ("conceptual_weights.pt",), licence="MIT",
           note="a mirror of the Google Drive file rmokady/CLIP_prefix_caption's README links"),
    Source("sd15", "Stable Diffusion 1.5 (its text encoder is OpenAI CLIP ViT-L/14, 768 wide)", "hub",
           "stable-diffusion-v1-5/stable-diffusion-v1-5", SD15_FILES,
           licence="CreativeML OpenRAIL-M (use restrictions; read it before serving)",
           note="fp32 safetensors: UNet 3.4 GB, VAE 0.33 GB, text encoder 0.49 GB"),
    Source("lcm-lora-sdv1-5", "LCM-LoRA for SD 1.5: a rank-64 LoRA over the UNet's attention projections, "
           "feed-forwards, resnet convs and time projections that makes it a latent consistency model (2-8 steps, "
           "no classifier-free guidance); fused into the UNet (clipgpt_core.models.fast_sd)", "hub",
           "latent-consistency/lcm-lora-sdv1-5", ("pytorch_lora_weights.safetensors",),
           licence="openrail++", note="67.5M parameters, ~135 MB fp16"),
    Source("taesd", "TAESD: a tiny autoencoder for SD 1.x latents (1.2M-parameter decoder in place of the SD VAE's "
           "49.5M)", "hub", "madebyollin/taesd", ("config.json", "diffusion_pytorch_model.safetensors"),
           licence="MIT", note="2.4M parameters (encoder and decoder)"),
]}


def source(name: str) -> Source:
    from ..errors import InputError
    if name not in SOURCES:
        raise InputError(f"no published piece named {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]
