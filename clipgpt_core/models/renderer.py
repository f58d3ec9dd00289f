"""The Render tab's core: text (and learned tokens) -> images through a diffusers StableDiffusionPipeline.

    renderer = load_bundle().renderer                           # the built-in, trained on ShapesWorld
    renderer = Renderer.pretrained()                            # Stable Diffusion 1.5 from the local hub cache
    images = renderer.render(["a red star left of a blue circle"], num_images=4, seed=0)
    images, plans = renderer.render_with_plans([...])           # plus what was read and the layout drawn
    images = renderer.render([...], via_prior=True)             # text -> CLIP image embedding -> image
    images = renderer.variations([image], num_images=4, seed=0) # image -> its CLIP embedding -> image
    renderer.load_tokens("learned_embeds.safetensors")          # -> ["<concept>"]; then "a <concept> ..."
    Renderer.save_tokens("learned_embeds.safetensors", {"<concept>": embedding})   # diffusers' format

Rendering is planned, then drawn (clipgpt_core.models.planner): the prompt is read in the world's caption language,
a scene the reading is true of is drawn from the seed, and a LayoutDiffusionPipeline (StableDiffusionPipeline
with the scene's layout map as extra UNet input channels) draws it. A pipeline without layout channels
(Stable Diffusion, an older renderer) draws from the text alone; the plan is still made and shown.
Images as prompts (seed 003's unCLIP): a CLIP image embedding, of an image or predicted from text by the
bundle's caption->CLIP prior, is read by the bundle's captioner into the world's language, then planned and
drawn the same way; a variation keeps what the vector says and lets the layout vary.

Both are StableDiffusionPipeline classes, so `from_pretrained`, `load_textual_inversion` and the rest of
diffusers work on the built-in one exactly as on SD. Learned-token files are diffusers' textual
inversion format: one key, the token, holding a (n_vectors, width) tensor; width is the text
encoder's (128 for the built-in CLIP, 768 for SD 1.5's OpenAI CLIP ViT-L/14).
"""
from __future__ import annotations

import json

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .rendering import (GUIDANCE, MAX_BATCH, NUM_IMAGES, PRIOR_TEMPERATURE, PRIOR_TEMPERATURE_DEFAULT,  # noqa: F401
                        STEPS, RenderError, check_options, yield_between_steps)                      # (their home)
from .planner import Plan, completions, layout_map, plan_prompts

if TYPE_CHECKING:
    import torch

# torch (and diffusers) are imported where a pipeline is loaded or used: the app lays out its Render tab
# from the constants and errors here before any model is in memory

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
STEPS_DEFAULT = 12        # DPM-Solver++: 12, 16 and 20 steps judged alike on bench_render (docs/results.md, Render)
DETAIL_DEFAULT = True     # the detail pass on: better on every scene set of bench_render (docs/results.md, Render)
GUIDANCE_DEFAULT = 2.5   # the best of 1.5-6 on bench_render's scenes (docs/results.md, Render)
MAX_PROMPT_CHARS = 2000
TOKEN = re.compile(r"<[^<>\s|]+>")  # a learned token as typed in a prompt: <concept>


class TokenAlreadyLoaded(RenderError):
    """A learned token of that name is loaded already: harmless, a UI may say so and go on."""


TEXT_PARTS = ("text_encoder", "tokenizer")   # what a bundle's renderer takes from the bundle's CLIP


def save_pipeline(pipe, directory: str | Path, with_text_encoder: bool = True) -> Path:
    """save_pretrained with the UNet and VAE as float16 safetensors (half the size), leaving `pipe` in
    float32 holding exactly the weights on disk (float32 -> float16 -> float32), so it renders as a
    reload does.
    with_text_encoder=False leaves out text_encoder/ and tokenizer/ (a bundle's renderer: they are the
    bundle's CLIP text tower, kept once; Renderer.load(directory, clip=...) puts them back)."""
    import torch
    import shutil
    from diffusers.utils import logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()      # .to(float16) warns about modules to keep in float32; there are none
    # the UNet and VAE in float16; the text encoder stays float32, the CLIP text tower's exact weights
    halved = [m for m in (pipe.unet, pipe.vae) if m is not None]
    try:
        for m in halved:
            m.to(torch.float16)
        pipe.save_pretrained(directory, safe_serialization=True)
    finally:
        for m in halved:
            m.to(torch.float32)
        logging.set_verbosity(level)
    if not with_text_encoder:
        for part in TEXT_PARTS:
            shutil.rmtree(Path(directory) / part, ignore_errors=True)
    for config in Path(directory).glob("*/config.json"):   # a component loaded from a folder names it: drop
        data = json.loads(config.read_text())              # the path, a saved pipeline names no machine's paths
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(directory)


def _hub_cache() -> str:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    from huggingface_hub.constants import HF_HUB_CACHE
    return HF_HUB_CACHE


MAX_FRAMES = 16      # an interpolation strip or a text diff's amounts


class Renderer:
    """A StableDiffusionPipeline with checked inputs, a layout planner and learned-token files."""

    def __init__(self, pipe, source: str = "in memory", from_hub: bool = False, captioner=None,
                 embedding_prior=None):
        self.pipe = pipe                    # a diffusers StableDiffusionPipeline (or LayoutDiffusionPipeline)
        self.source = source                # where it came from: a directory or a hub model id
        self.from_hub = from_hub
        # images as prompts: the captioner reads a CLIP image vector; the embedding prior makes one from text
        self.captioner = captioner
        self.embedding_prior = embedding_prior

    def __repr__(self) -> str:
        return f"Renderer({self.source!r}, width={self.width}, tokens={self.tokens})"

    # what render/variations/draw use when the caller does not choose (models/fast_sd.make_fast: 4 and 1.0)
    default_steps, default_guidance, fast = STEPS_DEFAULT, GUIDANCE_DEFAULT, None

    decoder = None   # unCLIP's decoder (models/decoder.py): loaded on the first decode() from decoder/ beside source

    layout_head = None   # method="layout": loaded on first use from layout_head/ beside source (models/layout_head.py)

    vector_clip = None   # the CLIP whose image vectors decode() and text_diff() read; None: the captioner's (the bundle's)

    def reads_vectors_of(self):
        return self.vector_clip if self.vector_clip is not None else getattr(self.captioner, "clip", None)

    def decode(self, vectors, num_images: int = 1, seed: int | None = 0, guidance_scale: float | None = None,
               steps: int | None = None, method: str | None = None, text: str | None = None):
        """CLIP image vectors (n, d) -> n * num_images PIL images drawn from the vectors themselves (no caption).
        method: "unclip" (the decoder UNet) or "layout" (layout head -> scene -> the layout UNet; text "none" or
        "caption"); None: models/decoder.METHOD_DEFAULT."""
        from . import decoder as d
        method = d.METHOD_DEFAULT if method is None else method
        if method == "layout":
            return d.decode_layout(self, d.layout_head_of(self), vectors, num_images, seed, guidance_scale, steps,
                                   d.LAYOUT_TEXT_DEFAULT if text is None else text)
        if method != "unclip":
            raise RenderError(f"method must be one of {', '.join(d.METHODS)}, got {method!r}")
        return d.decode(d.decoder_of(self), vectors, num_images, seed, guidance_scale, steps)

    def sample_via_prior(self, prompts: list[str], num_images: int = 4, seed: int | None = 0,
                         temperature: float | None = None, **kwargs):
        """DALL-E 2's whole path with a sampling prior: each prompt -> num_images CLIP image vectors drawn from the
        caption->CLIP prior (EmbeddingPrior.sample) -> decode (its options in kwargs); prompt by prompt."""
        if isinstance(prompts, str):
            raise TypeError("sample_via_prior takes a list of prompts, not one string")
        prompts = [self.check_prompt(p) for p in prompts]
        if not prompts:
            raise RenderError("No prompts: give at least one")
        if self.embedding_prior is None:
            raise RenderError("Sampling via the prior needs a bundle with a caption->CLIP prior (the built-in has one)")
        seed = self.check_options(num_images, self.default_guidance, self.default_steps, seed, len(prompts))
        t = PRIOR_TEMPERATURE_DEFAULT if temperature is None else temperature
        z = self.embedding_prior.sample(prompts, num_images, seed, t)                     # (P, S, D)
        return self.decode(z.reshape(-1, z.shape[-1]), 1, seed, **kwargs)

    def interpolate(self, vector_a, vector_b, frames: int = 5, seed: int | None = 0, **kwargs):
        """`frames` images along the slerp from vector_a to vector_b (two CLIP image vectors, (d,)), the noise fixed
        (decode's other options in kwargs)."""
        from . import decoder as d
        import numpy as np
        if not 2 <= int(frames) <= MAX_FRAMES:
            raise RenderError(f"frames must be between 2 and {MAX_FRAMES}, got {frames}")
        return d.frames(self, d.slerp(vector_a, vector_b, np.linspace(0, 1, int(frames))), seed, **kwargs)

    def text_diff(self, vector, from_text: str, to_text: str, thetas=(0.0, 0.25, 0.5, 0.75), seed: int | None = 0,
                  **kwargs):
        """DALL-E 2's text diffs: the image vector moved towards CLIP(to_text) - CLIP(from_text) by each theta
        (models/decoder.text_diff), each drawn with the same noise. Needs the bundle's CLIP (its captioner's)."""
        from . import decoder as d
        if self.reads_vectors_of() is None:
            raise RenderError("Text diffs need the bundle's CLIP to read the texts (a bundle with a captioner)")
        texts = [" ".join(str(t).split())[:MAX_PROMPT_CHARS] for t in (from_text, to_text)]
        if not all(texts):
            raise RenderError("A text diff needs both texts: what the image is and what it should become")
        if not 1 <= len(thetas) <= MAX_FRAMES or any(not 0 <= float(t) <= 1 for t in thetas):
            raise RenderError(f"thetas: 1 to {MAX_FRAMES} amounts, each between 0 and 1")
        z_from, z_to = self.reads_vectors_of().encode_texts(texts)
        return d.frames(self, d.text_diff(vector, z_from, z_to, [float(t) for t in thetas]), seed, **kwargs)

    # ------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", clip=None, captioner=None,
             embedding_prior=None) -> "Renderer":
        """A pipeline saved with save_pretrained (the bundle's renderer/ folder), in float32. A folder
        without text_encoder/ (a bundle's renderer) takes its text encoder and tokenizer from `clip`;
        captioner and embedding_prior (a bundle's) read CLIP vectors for variations() and via_prior."""
        import json
        import torch
        from diffusers import StableDiffusionPipeline
        from .layout_pipeline import LayoutDiffusionPipeline
        directory = Path(directory)
        if not (directory / "model_index.json").is_file():
            raise RenderError(f"No diffusers pipeline at {directory} (no model_index.json)")
        kind = json.loads((directory / "model_index.json").read_text()).get("_class_name")
        pipeline = LayoutDiffusionPipeline if kind == LayoutDiffusionPipeline.__name__ else StableDiffusionPipeline
        parts = {}
        if not (directory / "text_encoder").is_dir():
            if clip is None:
                raise RenderError(f"{directory} has no text_encoder/: it is a bundle's renderer, whose text encoder "
                                  f"is the bundle's CLIP; load it with its bundle (load_bundle(...).renderer)")
            from .hf_text import text_encoder_from_clip, tokenizer_from_clip
            parts = {"text_encoder": text_encoder_from_clip(clip), "tokenizer": tokenizer_from_clip(clip)}
        pipe = pipeline.from_pretrained(directory, torch_dtype=torch.float32, local_files_only=True, **parts)
        pipe.set_progress_bar_config(desc="render")     # on: the Render tab's progress bar follows it
        return cls(pipe.to(device), str(directory), captioner=captioner, embedding_prior=embedding_prior)

    @classmethod
    def pretrained(cls, model_id: str = SD15, device: str = "cpu", captioner=None) -> "Renderer":
        """Stable Diffusion from the local Hugging Face cache only; never downloads."""
        import torch
        from diffusers import StableDiffusionPipeline
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                model_id, cache_dir=_hub_cache(), torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
        except (OSError, ValueError) as e:
            raise RenderError(
                f"Stable Diffusion ({model_id}) is not in the local Hugging Face cache ({_hub_cache()}), and this "
                f"machine does not download. On a machine with internet run\n"
                f"  hf download {model_id} --exclude '*.ckpt' '*.bin' '*non_ema*' '*fp16*' 'safety_checker/*'\n"
                f"and copy the cache here (or point HF_HOME / HF_HUB_CACHE at it). Its text encoder is OpenAI CLIP "
                f"ViT-L/14 (openai/clip-vit-large-patch14), so tokens learned against that CLIP (768 wide) plug "
                f"in. ({type(e).__name__})") from None
        pipe.set_progress_bar_config(desc="render")
        return cls(pipe.to(device), model_id, from_hub=True, captioner=captioner)

    def text_encoder_is(self, clip) -> bool:
        """Is this pipeline's text encoder exactly `clip`'s text tower (no learned tokens added)?"""
        import torch
        from .clip import text_tower
        mine = self.pipe.text_encoder.get_input_embeddings().weight
        theirs = text_tower(clip.model).token_embedding.weight
        return mine.shape == theirs.shape and torch.equal(mine.detach().cpu().float(), theirs.detach().cpu().float())

    def save(self, directory: str | Path, with_text_encoder: bool = True) -> Path:
        return save_pipeline(self.pipe, directory, with_text_encoder)

    # ------------------------------------------------------------------------- tokens
    @property
    def width(self) -> int:
        """Width of the text encoder's token embeddings (what a learned token must have)."""
        return int(self.pipe.text_encoder.get_input_embeddings().weight.shape[1])

    @property
    def tokens(self) -> list[str]:
        """Learned tokens loaded so far (multi-vector tokens by their first name)."""
        added = self.pipe.tokenizer.added_tokens_encoder
        return sorted(t for t in added if TOKEN.fullmatch(t))   # "<concept>_1" ... do not match

    def load_tokens(self, path: str | Path) -> list[str]:
        """Load a learned-token file (diffusers' learned_embeds.safetensors, or a .bin/.pt read with
        weights_only) through pipe.load_textual_inversion; returns the token(s) it added."""
        state = read_tokens(path)
        for token, emb in state.items():
            if emb.shape[-1] != self.width:
                raise RenderError(f"{Path(path).name} holds {emb.shape[-1]}-wide embeddings; this renderer's text "
                                  f"encoder takes {self.width}-wide ones (learn the token against the same CLIP)")
            if token in self.tokens:
                raise TokenAlreadyLoaded(f"{token} is already loaded")
            if token in self.pipe.tokenizer.get_vocab():
                raise RenderError(f"{token} is already a word of the tokenizer; rename the token")
        self.pipe.load_textual_inversion({t: e.float() for t, e in state.items()})
        return list(state)

    @staticmethod
    def save_tokens(path: str | Path, tokens: dict) -> Path:
        """Write {token: (n_vectors, width) or (width,) tensor} in diffusers' format (one token a file)."""
        import torch
        if len(tokens) != 1:
            raise RenderError(f"diffusers' learned-token format holds one token per file, got {len(tokens)}")
        (token, emb), = tokens.items()
        if not TOKEN.fullmatch(token):
            raise RenderError(f"Name a learned token like <concept> (angle brackets, no spaces), got {token!r}")
        from safetensors.torch import save_file
        emb = torch.as_tensor(emb).detach().float().cpu()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({token: emb.reshape(-1, emb.shape[-1]).contiguous()}, path, metadata={"format": "pt"})
        return path

    # ------------------------------------------------------------------------- rendering
    def check_prompt(self, prompt, what: str = "prompt") -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"a {what} must be a string, got {type(prompt).__name__}")
        prompt = " ".join(prompt.split())[:MAX_PROMPT_CHARS]
        if not prompt and what == "prompt":
            raise RenderError("Empty prompt: describe the image, e.g. 'a large red circle on a black background'")
        unknown = [t for t in TOKEN.findall(prompt) if t not in self.pipe.tokenizer.added_tokens_encoder]
        if unknown:
            loaded = ", ".join(self.tokens) or "none"
            raise RenderError(f"{', '.join(dict.fromkeys(unknown))} in the {what} is not a loaded token "
                              f"(loaded: {loaded}). Load its learned-token file first.")
        return prompt

    @property
    def reads_layout(self) -> bool:
        """Does the UNet read a layout map (LayoutDiffusionPipeline), or the text alone?"""
        return self.pipe.unet.config.in_channels > self.pipe.vae.config.latent_channels

    def check_options(self, num_images, guidance_scale, steps, seed, n_prompts: int) -> int:
        """Reject bad options with a concise message; -> the seed (drawn when None)."""
        return check_options(num_images, guidance_scale, steps, seed, n_prompts)

    def render(self, prompts: list[str], num_images: int = 1, guidance_scale: float | None = None,
               steps: int | None = None, seed: int | None = None, negative_prompt: str | None = None,
               via_prior: bool = False, detail: bool = DETAIL_DEFAULT):
        """prompts -> list of PIL images, num_images per prompt, prompt by prompt. The same seed gives
        the same images; seed None draws one. guidance_scale <= 1 turns classifier-free guidance off.
        via_prior=True: each prompt goes through the caption->CLIP prior to a CLIP image embedding, which is
        read back and drawn as variations() draws an image's (DALL-E 2's full path). detail: the detail pass
        (small objects drawn large and scaled into place; a layout pipeline only)."""
        return self.render_with_plans(prompts, num_images, guidance_scale, steps, seed, negative_prompt, via_prior,
                                      detail)[0]

    def render_with_plans(self, prompts: list[str], num_images: int = 1, guidance_scale: float | None = None,
                          steps: int | None = None, seed: int | None = None, negative_prompt: str | None = None,
                          via_prior: bool = False, detail: bool = DETAIL_DEFAULT):
        """render(), and the planner.Plan of each image: what was read of its prompt and the scene drawn."""
        if isinstance(prompts, str):
            raise TypeError("render takes a list of prompts, not one string")
        prompts = [self.check_prompt(p) for p in prompts]
        if not prompts:
            raise RenderError("No prompts: give at least one")
        negative = self.check_prompt(negative_prompt, "negative prompt") if negative_prompt else None
        guidance_scale, steps = self._defaults(guidance_scale, steps)
        seed = self.check_options(num_images, guidance_scale, steps, seed, len(prompts))
        if via_prior:
            if self.embedding_prior is None or self.captioner is None:
                raise RenderError("Rendering via the prior needs a bundle with a caption->CLIP prior and a "
                                  "captioner (the built-in bundle has both)")
            prompts = self.read_embeddings(self.embedding_prior.predict(prompts))
        plans = plan_prompts(prompts, num_images, seed)
        return self.draw(plans, guidance_scale, steps, seed, negative, detail), plans

    def variations(self, images, num_images: int = 1, seed: int | None = 0, guidance_scale: float | None = None,
                   steps: int | None = None, detail: bool = DETAIL_DEFAULT):
        """Images as prompts: each image's CLIP embedding, read by the captioner, drawn num_images times with
        the objects, colours, shapes, sizes and background it says, and a new layout each time."""
        return self.variations_with_plans(images, num_images, seed, guidance_scale, steps, detail)[0]

    def variations_with_plans(self, images, num_images: int = 1, seed: int | None = 0,
                              guidance_scale: float | None = None, steps: int | None = None,
                              detail: bool = DETAIL_DEFAULT):
        images = list(images)
        guidance_scale, steps = self._defaults(guidance_scale, steps)
        if not images:
            raise RenderError("No images: give at least one")
        if self.captioner is None:
            raise RenderError("Variations need a bundle with a captioner to read the CLIP image embedding")
        seed = self.check_options(num_images, guidance_scale, steps, seed, len(images))
        texts = self.read_embeddings(self.captioner.clip.encode_images(images))
        plans = plan_prompts(texts, num_images, seed, vary_layout=True)
        return self.draw(plans, guidance_scale, steps, seed, detail=detail), plans

    def read_embeddings(self, embeddings) -> list[str]:
        """CLIP image embeddings (N, D) -> what each says, in the world's caption language: the captioner's
        reading (`bundle.captioner.caption_embeddings`), completed with the background and sizes it left unstated,
        each the value whose caption the embedding is most similar to (world captions state them half the time;
        the vector holds them)."""
        import numpy as np
        embeddings = np.asarray(embeddings, np.float32)
        texts = [" ".join(t.split())[:MAX_PROMPT_CHARS] or "an image"
                 for t in self.captioner.caption_embeddings(embeddings)]
        out = []
        for text, e in zip(texts, embeddings):
            options = completions(text)
            if len(options) > 1:
                text = options[int(np.argmax(self.captioner.clip.encode_texts(options) @ e))]
            out.append(text)
        return out

    def _defaults(self, guidance_scale, steps) -> tuple:
        return (self.default_guidance if guidance_scale is None else guidance_scale,
                self.default_steps if steps is None else steps)

    def draw(self, plans: list[Plan], guidance_scale: float | None = None, steps: int | None = None,
             seed: int = 0, negative_prompt: str | None = None, detail: bool = DETAIL_DEFAULT):
        """Plans -> one PIL image each: the plan's prompt through the text encoder and, for a layout
        pipeline, its scene's layout map beside the latent. detail=True (a layout pipeline): each small
        object is also drawn large in the same batch and scaled down over its place (models/detail_pass)."""
        import torch
        from .detail_pass import detail_crops, paste_details
        generator = torch.Generator(device=self.pipe.device).manual_seed(seed)
        guidance_scale, steps = self._defaults(guidance_scale, steps)
        texts = [p.reading.text for p in plans]
        scenes = [p.scene for p in plans]
        crops = detail_crops(scenes) if detail and self.reads_layout else []
        texts += [c.text for c in crops]
        negative = [negative_prompt] * len(texts) if negative_prompt else None
        kwargs = dict(prompt=texts, negative_prompt=negative, guidance_scale=float(guidance_scale),
                      num_inference_steps=steps, generator=generator, callback_on_step_end=yield_between_steps)
        if self.reads_layout:
            kwargs["layout"] = torch.from_numpy(layout_map(scenes + [c.scene for c in crops],
                                                           self.pipe.unet.config.sample_size, self.pipe.layout_channels))
        with torch.no_grad():
            images = self.pipe(**kwargs).images
        return paste_details(images[:len(plans)], crops, images[len(plans):]) if crops else images


def read_tokens(path: str | Path) -> dict[str, torch.Tensor]:
    """A learned-token file -> {token: (n_vectors, width)}; diffusers' one-key format or A1111's."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise RenderError(f"No learned-token file at {path}")
    what = (f"{path.name} is not a learned-token file diffusers can read: expected learned_embeds.safetensors "
            f"(or .bin) holding one key, the token (e.g. '<concept>'), with a (n_vectors, width) tensor")
    try:
        head = path.open("rb").read(9)           # safetensors: an 8-byte header length, then its JSON header
        if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):   # an upload may lose its name
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # corrupt, truncated, pickled code, not a tensor file: all the same to the user
        raise RenderError(f"{what} ({type(e).__name__})") from None
    if isinstance(state, dict) and "string_to_param" in state:      # A1111's format
        name = str(state.get("name", path.stem))
        state = {name if TOKEN.fullmatch(name) else f"<{name}>": state["string_to_param"].get("*")}
    if not (isinstance(state, dict) and len(state) == 1):
        raise RenderError(f"{what}; it holds {len(state) if isinstance(state, dict) else type(state).__name__} keys")
    (token, emb), = state.items()
    if not (isinstance(token, str) and isinstance(emb, torch.Tensor) and emb.ndim in (1, 2) and emb.numel()
            and torch.isfinite(emb).all()):
        raise RenderError(f"{what}; its {token!r} is not a finite 1- or 2-d tensor")
    if not TOKEN.fullmatch(token):
        raise RenderError(f"{path.name} names its token {token!r}; a learned token looks like <concept>")
    return {token: emb.reshape(-1, emb.shape[-1])}
