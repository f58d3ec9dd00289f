"""unCLIP's decoder for the Render tab: CLIP image vectors drawn themselves, no caption in between (issue 40).

    renderer = load_bundle().renderer
    images = renderer.decode(bundle.clip.encode_images([image]), num_images=4, seed=0)   # variations of an image
    images = renderer.decode(slerp(z_a, z_b, 0.5)[None])                                # any vector of the CLIP space

The decoder is an UnclipDecoderPipeline (models/unclip_pipeline.py, trained by clipgpt_train/decoder.py) kept beside
the renderer, in the bundle's decoder/ folder; Renderer.decode loads it on first use (load_decoder) and hands over
to decode() here. Vectors are L2-normalised, as CLIP's image tower returns them and as the decoder trained.

method="layout" (decode_layout): the layout head (models/layout_head.py, in the bundle's layout_head/ folder)
reads the vector as a scene, per 3x3 cell and background (refined by analysis by synthesis against the bundle's
CLIP, the captioner's, when the renderer has one: layout_head.refine), and the shipped layout renderer draws it as its
plan (planner.layout_map, the detail pass), with an empty prompt (text="none": no caption is read) or the predicted
scene's own full world caption (text="caption"). Places (the cell) are kept; num_images vary the noise only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .rendering import RenderError, check_options, yield_between_steps

METHODS = ("unclip", "layout")   # Renderer.decode(method=...): the unCLIP UNet, or layout head -> layout UNet
METHOD_DEFAULT = "layout"    # bench_decode: binding 0.955 vs 0.07, count 0.955 vs 0.55, CLIP-I 0.987 vs 0.73
LAYOUT_TEXTS = ("none", "caption")   # the layout route's text: "" (no caption read), or the predicted scene's own
# bench_decode on the size-conjunction bundle: binding 0.975 vs 0.93 (held-out 0.97 vs 0.90), size 0.97 vs 0.925
LAYOUT_TEXT_DEFAULT = "caption"
REFINE_ROUNDS = 3     # analysis-by-synthesis rounds on the head's scene (layout_head.refine; 0: the head alone)

DECODER_DIR = "decoder"       # beside the renderer's folder in a bundle
GUIDANCE_DEFAULT = 3.0
STEPS_DEFAULT = 12


def load_decoder(directory: str | Path, device: str = "cpu"):
    """An UnclipDecoderPipeline saved with save_pretrained, in float32."""
    import torch
    from .unclip_pipeline import UnclipDecoderPipeline
    directory = Path(directory)
    if not (directory / "model_index.json").is_file():
        raise RenderError(f"No unCLIP decoder at {directory} (no model_index.json). Train one with "
                          f"`python -m clipgpt_train.decoder --out {directory}`")
    pipe = UnclipDecoderPipeline.from_pretrained(directory, torch_dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(desc="decode")
    return pipe.to(device)


def decoder_of(renderer):
    """The renderer's decoder: its `decoder` attribute, else loaded from the decoder/ folder beside its own."""
    if renderer.decoder is None:
        renderer.decoder = load_decoder(Path(renderer.source).parent / DECODER_DIR)
    return renderer.decoder


def check_vectors(vectors, dim: int) -> np.ndarray:
    """(n, dim) or (dim,) array-like -> (n, dim) float32, L2-normalised; concise errors otherwise."""
    try:
        x = np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise RenderError(f"vectors must be numbers, (n, {dim}): CLIP image embeddings") from None
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim or not len(x):
        raise RenderError(f"vectors must be (n, {dim}) CLIP image embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise RenderError("vectors hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms < 1e-6).any():
        raise RenderError("a vector is all zeros: there is nothing to draw (zeros are the decoder's unconditional)")
    return x / norms


def decode(pipe, vectors, num_images: int = 1, seed: int | None = 0, guidance_scale: float | None = None,
           steps: int | None = None) -> list:
    """vectors (n, d) -> n * num_images PIL images, vector by vector (num_images each, consecutive). The same
    seed gives the same images; guidance_scale <= 1 turns classifier-free guidance off."""
    import torch
    guidance_scale = GUIDANCE_DEFAULT if guidance_scale is None else guidance_scale
    steps = STEPS_DEFAULT if steps is None else steps
    x = check_vectors(vectors, pipe.embed_dim)
    seed = check_options(num_images, guidance_scale, steps, seed, len(x), "vectors")
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    with torch.no_grad():
        return pipe(torch.from_numpy(x), num_images_per_prompt=num_images, guidance_scale=float(guidance_scale),
                    num_inference_steps=steps, generator=generator, callback_on_step_end=yield_between_steps).images


# ----------------------------------------------------------------------------- moving through the CLIP space
def slerp(a, b, t) -> np.ndarray:
    """Spherical interpolation between unit vectors a and b (d,) at t (a number or (k,)) -> (k, d), unit."""
    a, b = (v / np.linalg.norm(v) for v in (np.asarray(a, np.float64), np.asarray(b, np.float64)))
    t = np.atleast_1d(np.asarray(t, np.float64))[:, None]
    omega = np.arccos(np.clip(a @ b, -1.0, 1.0))
    if omega < 1e-6:                                  # the same direction: nothing to bend
        out = (1 - t) * a + t * b
    else:
        out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def text_diff(image_vector, from_vector, to_vector, theta) -> np.ndarray:
    """DALL-E 2's text diff: slerp(z_i, normalize(z_t - z_t0), theta) -> (k, d). z_t0 the text of what the image
    is ("a red star"), z_t what it should become ("a blue star"); theta in [0, 1] how far to move (DALL-E 2
    shows 0.25-0.5)."""
    d = np.asarray(to_vector, np.float64) - np.asarray(from_vector, np.float64)
    n = np.linalg.norm(d)
    if n < 1e-6:
        raise RenderError("the two texts have the same CLIP vector: there is no difference to apply")
    return slerp(image_vector, d / n, theta)


def frames(renderer, vectors, seed: int | None = 0, **kwargs) -> list:
    """Each vector (k, d) decoded alone with the same seed: the noise is fixed, so a strip shows what the vectors
    change, not the noise."""
    return [renderer.decode(v[None], 1, seed, **kwargs)[0] for v in np.asarray(vectors, np.float32)]


# ----------------------------------------------------------------------------- through a layout
def layout_head_of(renderer):
    """The renderer's layout head: its `layout_head` attribute, else loaded from layout_head/ beside its folder."""
    from .layout_head import LAYOUT_HEAD_DIR, LayoutHead
    if getattr(renderer, "layout_head", None) is None:
        renderer.layout_head = LayoutHead.load(Path(renderer.source).parent / LAYOUT_HEAD_DIR)
    return renderer.layout_head


def scene_caption(scene) -> str:
    """A world caption stating everything the layout map holds: every object's size, colour, shape and cell, and
    the background."""
    from ..world import scenes as world
    return world.caption_text(world.Description(
        tuple(world.Phrase(o.shape, o.colour, o.size, o.position) for o in scene.objects), background=scene.background))


def decode_layout(renderer, head, vectors, num_images: int = 1, seed: int | None = 0,
                  guidance_scale: float | None = None, steps: int | None = None, text: str = LAYOUT_TEXT_DEFAULT,
                  detail: bool = True, return_scenes: bool = False):
    """vectors (n, d) -> n * num_images PIL images: each vector's scene as the head reads it, drawn num_images
    times (seeds differ, the scene does not) by the renderer's layout UNet. return_scenes: (images, scenes)."""
    import torch
    from .detail_pass import detail_crops, paste_details
    from .planner import layout_map
    if not renderer.reads_layout:
        raise RenderError("decode(method='layout') needs a renderer whose UNet reads a layout map (the built-in one)")
    if text not in LAYOUT_TEXTS:
        raise RenderError(f"text must be one of {', '.join(LAYOUT_TEXTS)}, got {text!r}")
    x = check_vectors(vectors, head.cfg.dim)
    guidance_scale = getattr(renderer, "default_guidance", 2.5) if guidance_scale is None else guidance_scale
    steps = getattr(renderer, "default_steps", 12) if steps is None else steps
    seed = renderer.check_options(num_images, guidance_scale, steps, seed, len(x))
    clip = renderer.reads_vectors_of()                          # the bundle's CLIP: the head's scenes refined
    scenes = [s for s in head.predict(x, clip=clip, rounds=REFINE_ROUNDS) for _ in range(num_images)]
    crops = detail_crops(scenes) if detail else []
    if text == "caption":
        texts = [scene_caption(s) for s in scenes] + [c.text for c in crops]
    else:
        texts = [""] * (len(scenes) + len(crops))
    layout = layout_map(scenes + [c.scene for c in crops], renderer.pipe.unet.config.sample_size,
                        renderer.pipe.layout_channels)
    generator = torch.Generator(device=renderer.pipe.device).manual_seed(seed)
    with torch.no_grad():
        images = renderer.pipe(prompt=texts, layout=torch.from_numpy(layout), guidance_scale=float(guidance_scale),
                               num_inference_steps=steps, generator=generator,
                               callback_on_step_end=yield_between_steps).images
    images = paste_details(images[:len(scenes)], crops, images[len(scenes):]) if crops else images
    return (images, scenes) if return_scenes else images
