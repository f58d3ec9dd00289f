"""Few-step Stable Diffusion 1.5, the way diffusers documents it: the LCM-LoRA fused into the UNet, the LCM
scheduler, and TAESD in place of the SD VAE. An image then takes 4 UNet steps at batch 1 (LCM needs no
classifier-free guidance) and a decoder of 1.2M parameters instead of 50 guided steps at batch 2 and one of 49.5M.

    renderer = Renderer.load("sd15/")                                       # or bundle.renderer
    make_fast(renderer, "lcm/pytorch_lora_weights.safetensors", "taesd/")
    renderer.render(["a photo of a dog"])      # 4 steps, guidance 1.0 (renderer.default_steps, .default_guidance)

A bundle names it in its manifest, beside the renderer it speeds up (`clipgpt bundle --renderer sd15 --fast`):
components.renderer.fast = {"lcm_lora": "lcm-lora-sdv1-5", "taesd": "taesd"}: published pieces (fetched into the
Hugging Face cache like the renderer) or paths. The LoRA is fused and its layers dropped, so a step costs what a
plain UNet step does; learned tokens (renderer.load_tokens) go into the text encoder, which the LoRA leaves alone.
"""
from __future__ import annotations

from pathlib import Path

from .rendering import RenderError

STEPS = 4            # LCM: 2-8 steps (the LCM-LoRA's model card); 4 is its own example
GUIDANCE = 1.0       # LCM was distilled with guidance folded in: <= 1 turns classifier-free guidance off (batch 1)
PUBLISHED = {"lcm_lora": "lcm-lora-sdv1-5", "taesd": "taesd"}     # the manifest's "fast" for the published pieces
LORA_FILE = "pytorch_lora_weights.safetensors"


def defaults(manifest: dict) -> tuple[int, float] | None:
    """(steps, guidance) a bundle's renderer draws with when the caller does not choose, from its manifest alone
    (the Render tab is laid out before the renderer loads); None: the renderer's own."""
    return (STEPS, GUIDANCE) if manifest.get("components", {}).get("renderer", {}).get("fast") else None


def make_fast(renderer, lora, taesd, steps: int = STEPS, guidance: float = GUIDANCE):
    """The renderer's pipeline made few-step in place: `lora` (an LCM-LoRA file, or a folder holding
    pytorch_lora_weights.safetensors) fused into the UNet, the LCM scheduler, `taesd` (an AutoencoderTiny folder)
    as the VAE; the renderer then draws with `steps` and `guidance` unless told otherwise. -> the renderer."""
    from diffusers import LCMScheduler
    pipe = renderer.pipe
    fuse_lora(pipe, lora)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    use_taesd(pipe, taesd)
    renderer.default_steps, renderer.default_guidance = steps, guidance
    renderer.fast = {"lcm_lora": str(lora), "taesd": str(taesd)}
    return renderer


def from_manifest(renderer, fast: dict, base: Path | None = None):
    """make_fast with the pieces a manifest's "fast" names: published piece names (fetched when missing, or named
    with their `clipgpt fetch` when offline) or paths (relative ones from `base`, the bundle folder)."""
    return make_fast(renderer, piece(fast["lcm_lora"], base), piece(fast["taesd"], base))


def piece(spec: str, base: Path | None = None) -> Path:
    from ..published.fetch import fetch
    from ..published.sources import SOURCES
    if spec in SOURCES:
        return fetch(spec)
    path = Path(spec).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _lora_file(lora) -> Path:
    path = Path(lora)
    if path.is_dir():
        files = [path / LORA_FILE] if (path / LORA_FILE).is_file() else sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise RenderError(f"{path} holds no single LoRA file ({LORA_FILE} or one .safetensors)")
        path = files[0]
    if not path.is_file():
        raise RenderError(f"No LoRA file at {path}")
    return path


def check_lora(pipe, state_dict: dict, name: str) -> int:
    """Every UNet LoRA pair in `state_dict` (diffusers' format, as lora_state_dict returns it) must name a Linear or
    Conv2d of this UNet with its shapes: a LoRA made for another model is refused here, naming what differs, rather
    than deep inside peft. -> the number of modules it adapts."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    unet_keys = {k[len("unet."):]: v for k, v in state_dict.items() if k.startswith("unet.")}
    if not unet_keys:
        raise RenderError(f"{name} holds no LoRA weights for a UNet (keys such as unet.<module>.lora_A.weight or "
                          f"lora_unet_...); is it a LoRA for Stable Diffusion?")
    if not any("lora_A" in k for k in unet_keys):
        unet_keys = convert_unet_state_dict_to_peft(unet_keys)
    modules = dict(pipe.unet.named_modules())
    wrong = []
    pairs = {k[:-len(".lora_A.weight")] for k in unet_keys if k.endswith(".lora_A.weight")}
    for path in sorted(pairs):
        down, up = unet_keys[f"{path}.lora_A.weight"], unet_keys.get(f"{path}.lora_B.weight")
        module = modules.get(path)
        if module is None:
            wrong.append(f"{path}: no such module in this UNet")
            continue
        if hasattr(module, "in_features"):         # Linear: A (r, in), B (out, r)
            want_in, out = (module.in_features,), module.out_features
        elif hasattr(module, "kernel_size"):       # Conv2d: A (r, in, kh, kw), B (out, r, 1, 1)
            want_in, out = (module.in_channels, *module.kernel_size), module.out_channels
        else:
            wrong.append(f"{path}: a {type(module).__name__}, not a Linear or Conv2d")
            continue
        if up is None or tuple(down.shape[1:]) != want_in or up.shape[0] != out or up.shape[1] != down.shape[0]:
            got = f"A {tuple(down.shape)}, B {tuple(up.shape) if up is not None else 'missing'}"
            wrong.append(f"{path}: {got} for a {type(module).__name__} of {want_in[0]} -> {out}")
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise RenderError(f"{name} does not fit this renderer's UNet: {'; '.join(wrong[:3])}{more}. Use the LoRA made "
                          f"for this model (for Stable Diffusion 1.5: latent-consistency/lcm-lora-sdv1-5)")
    return len(pairs)


def fuse_lora(pipe, lora) -> int:
    """Load the LoRA (diffusers' or kohya's key layout), check it fits, fuse it into the UNet's weights and drop its
    layers (a fused step costs a plain one). -> the number of modules it changed."""
    path = _lora_file(lora)
    try:
        state_dict, _ = pipe.lora_state_dict(str(path.parent), weight_name=path.name)
    except Exception as e:          # not safetensors, truncated, keys diffusers cannot map: the same to the user
        raise RenderError(f"{path.name} is not a LoRA file diffusers can read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    n = check_lora(pipe, state_dict, path.name)
    del state_dict
    from diffusers.utils import logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()       # "no LoRA keys for CLIPTextModel": the LCM-LoRA adapts the UNet alone
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="lcm")
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers (and their 67.5M parameters) go
    except (RuntimeError, ValueError, KeyError) as e:
        raise RenderError(f"{path.name} could not be fused into this UNet: {str(e).splitlines()[0][:300]}") from None
    finally:
        logging.set_verbosity(level)
    return n


def use_taesd(pipe, taesd) -> None:
    """An AutoencoderTiny folder (madebyollin/taesd's layout) as the pipeline's VAE."""
    import torch
    from diffusers import AutoencoderTiny
    from diffusers.image_processor import VaeImageProcessor
    folder = Path(taesd)
    if not (folder / "config.json").is_file():
        raise RenderError(f"No TAESD at {folder} (no config.json; madebyollin/taesd's files are config.json and "
                          f"diffusion_pytorch_model.safetensors)")
    try:
        vae = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise RenderError(f"{folder} is not a TAESD (AutoencoderTiny) folder: {str(e).splitlines()[0][:200]}") from None
    if vae.config.latent_channels != pipe.vae.config.latent_channels:
        raise RenderError(f"{folder}: a TAESD of {vae.config.latent_channels} latent channels; this pipeline's latents "
                          f"have {pipe.vae.config.latent_channels} (madebyollin/taesd is SD 1.x's)")
    pipe.vae = vae.to(pipe.device)
    pipe.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    pipe.image_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor)
