"""The CLIP component: open_clip models behind one small interface.

Our own architectures live as JSON configs in `configs/` and are registered with
open_clip's registry (`open_clip.add_model_config`), so the built-in model and pretrained
ones (ViT-B-32 ...) come out of the same factory, `open_clip.create_model_and_transforms`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..errors import ClipGPTError, InputError
from . import shapes_cnn  # noqa: F401  registers the built-in image tower with timm
from ..batching import batched, yield_to_quick
from ..images import load_image

MODEL_CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

WEIGHTS_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"   # open_clip's own hub-export layout
SHARED_BATCH_MAX = 64                   # calls with more items than this run alone (batching.py)
MAX_TEXT_CHARS = 2000                   # longer input is cut; CLIP sees <= context_length tokens anyway


class TextCache:
    """Text -> its CLIP embedding, the most recent `size` texts: a shared app encodes the same texts again and again
    (zero-shot's fixed prompts, the world's captions a captioner ranks, popular queries). Emptied when the model's
    weights change in place (a training step, load_state_dict), read through each parameter's version counter."""

    def __init__(self, size: int = 8192):
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._version = None

    def __reduce__(self):               # a copy (deepcopy, pickle) starts empty: it holds a lock, and is a cache
        return TextCache, (self.size,)

    def get(self, texts: list[str], version) -> dict[str, np.ndarray]:
        with self._lock:
            if version != self._version:
                self._vectors.clear()
                self._version = version
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for t in found:
                self._vectors.move_to_end(t)
            return found

    def put(self, vectors: dict[str, np.ndarray], version) -> None:
        with self._lock:
            if version != self._version:
                return
            self._vectors.update(vectors)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)


class WeightsNotAvailable(ClipGPTError, RuntimeError):
    """Pretrained weights are not on this machine; the message says how to get them."""


@dataclass
class ClipEncoder:
    """An open_clip model with its eval transform and tokenizer.

    encode_images / encode_texts return float32 numpy arrays (N, D), L2-normalised."""
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    model_name: str
    pretrained: str | None = None
    batch_size: int = 256
    text_cache: TextCache = field(default_factory=TextCache, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if self.model.text_projection is not None \
            else int(self.model.visual.output_dim)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self, part: str = "all") -> str:
        """A short hash of the weights: "all", or "text" (the text tower up to its final norm, which is
        all the caption prior and the renderer read). Components record the fingerprint of the CLIP
        they were trained against, so a bundle whose parts no longer match is refused, and caches of
        embeddings are rebuilt when the model changes."""
        return weights_fingerprint(self.model.state_dict(), part, self.model_name)

    def image_tensor(self, images) -> torch.Tensor:
        """list of images (PIL, paths, arrays) -> (N, 3, H, W) normalised tensor."""
        return torch.stack([self.preprocess(load_image(im)) for im in images])

    def encode_images(self, images) -> np.ndarray:
        """Images -> (N, D). A few images (a user's query) share model passes with other threads' (batching.py);
        many (a folder being indexed) run in the calling thread, so they hold up no one's query."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), np.float32)
        x = self.image_tensor(images)                        # decoded here: a bad image fails its caller alone
        if len(x) > SHARED_BATCH_MAX:
            return self._encode_image_tensor(list(x))
        return np.stack(batched(self, "images", lambda xs, _: self._encode_image_tensor(xs))(list(x)))

    @torch.no_grad()
    def _encode_image_tensor(self, xs: list[torch.Tensor]) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(xs), self.batch_size):
            yield_to_quick()                                 # a long encode lets queries through between batches
            x = torch.stack(xs[i:i + self.batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def clean_texts(self, texts) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not one string")
        cleaned = []
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
            t = " ".join(t.split())[:MAX_TEXT_CHARS]
            if not t:
                raise InputError("Empty text: type a few words to search for")
            cleaned.append(t)
        return cleaned

    def encode_texts(self, texts) -> np.ndarray:
        """Texts -> (N, D), batched across threads as encode_images is; texts seen lately come from text_cache."""
        texts = self.clean_texts(texts)
        if not texts:
            return self._encode_texts(texts)
        if self.model.training:                 # dropout: nothing to cache
            return self._encode_new(texts)
        version = (id(self.model), sum(p._version for p in self.model.parameters()))
        known = self.text_cache.get(texts, version)
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if new:
            fresh = dict(zip(new, self._encode_new(new)))
            if len(fresh) <= self.text_cache.size // 4:     # a user's texts; not a folder's or an explainer's
                self.text_cache.put({t: v.copy() for t, v in fresh.items()}, version)   # rows, not the batch
            known.update(fresh)
        return np.stack([known[t] for t in texts])

    def _encode_new(self, texts: list[str]) -> np.ndarray:
        if len(texts) > SHARED_BATCH_MAX:
            return self._encode_texts(texts)
        return np.stack(batched(self, "texts", lambda ts, _: self._encode_texts(ts))(texts))

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(texts), self.batch_size):
            yield_to_quick()
            tokens = self.tokenizer(texts[i:i + self.batch_size]).to(self.device)
            out.append(F.normalize(encode_text_trimmed(self.model, tokens).float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def save(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """safetensors weights + open_clip's JSON config (model_cfg, preprocess_cfg). dtype: the floating-point
        weights stored in it (load_clip reads them into the model's own float32)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.model.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE)
        config = {"model_name": self.model_name,
                  "model_cfg": open_clip.get_model_config(self.model_name),
                  "preprocess_cfg": dict(self.model.visual.preprocess_cfg)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


TEXT_HEAD = ("text_projection", "logit_scale")   # text-side weights that are not the text tower proper


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the tokens up to the longest text's end (B, T <= context) -> (B, D).
    A caption is a few tokens of OpenAI CLIP's 77, and the padding cost most of its encode (16 world captions on
    ViT-B/32, one thread: 0.93 s whole, 0.31 s trimmed; the built-in CLIP's 32 tokens are mostly used, so little
    changes there). With causal attention no position sees those after it, so the end-of-text feature the argmax
    pool reads is the same (to float rounding, ~2e-6). Any other text tower (pooled otherwise, not causal, a custom
    .text) runs as open_clip runs it."""
    if (type(model).encode_text is not open_clip.model.CLIP.encode_text or getattr(model, "attn_mask", None) is None
            or getattr(model, "text_pool_type", None) != "argmax"):
        return model.encode_text(tokens)
    used = int((tokens != 0).to(torch.int64).cumsum(1).argmax(1).max()) + 1    # through the last non-pad token
    t = tokens[:, :used]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(t).to(cast) + model.positional_embedding[:used].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:used, :used]))
    x = x[torch.arange(x.shape[0]), t.argmax(dim=-1)]                       # open_clip's argmax pool
    proj = model.text_projection
    return x if proj is None else proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def text_tower(clip_model: torch.nn.Module) -> torch.nn.Module:
    """open_clip keeps the text tower on the CLIP itself, or under .text (CustomTextCLIP)."""
    return clip_model.text if hasattr(clip_model, "text") else clip_model


def is_text_tower(name: str) -> bool:
    """Weights of the text transformer (embeddings, blocks, final norm): what the prior and renderer read."""
    return not name.startswith("visual.") and name not in TEXT_HEAD


def weights_fingerprint(state: dict, part: str = "all", model_name: str = "") -> str:
    if part not in ("all", "text"):
        raise ValueError(f"fingerprint part must be 'all' or 'text', not {part!r}")
    h = hashlib.sha256(model_name.encode() if part == "all" else b"")
    for name, t in sorted(state.items()):
        if part == "all" or is_text_tower(name):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def create_clip(model_name: str, pretrained: str | None = None, device: str = "cpu",
                cache_dir: str | None = None) -> ClipEncoder:
    """One factory for every CLIP: our registered configs or open_clip's.

    pretrained: None (random init, for tests), an open_clip tag that must already be in the
    local hub cache, or a path to a .safetensors file."""
    if pretrained and not Path(pretrained).exists():
        require_cached_weights(model_name, pretrained, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, device=device, cache_dir=cache_dir)
    model.eval()
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer(model_name), model_name, pretrained)


def load_clip(directory: str | Path, device: str = "cpu") -> ClipEncoder:
    """Load a CLIP saved by ClipEncoder.save (a bundle component)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    name = ensure_registered(config)
    pp = config.get("preprocess_cfg", {})
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(directory / WEIGHTS_FILE), device=device,
        image_mean=pp.get("mean"), image_std=pp.get("std"),
        image_interpolation=pp.get("interpolation"), image_resize_mode=pp.get("resize_mode"))
    model.eval()
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer(name), name, str(directory))


def ensure_registered(config: dict) -> str:
    """Register the architecture a saved component carries if open_clip doesn't know it yet
    (a user's own architecture); returns the model name."""
    name = config["model_name"]
    if open_clip.get_model_config(name) is None:
        path = Path(tempfile.mkdtemp(prefix="clipgpt-config-")) / f"{name}.json"
        path.write_text(json.dumps(config["model_cfg"]))
        open_clip.add_model_config(path)
    return name


def require_cached_weights(model_name: str, tag: str, cache_dir: str | None = None) -> None:
    """Raise WeightsNotAvailable at once, with download instructions, if the weights for
    (model_name, tag) are not in the local hub cache. Never touches the network."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsNotAvailable(f"open_clip has no pretrained tag {tag!r} for {model_name}; "
                                  f"known tags: {', '.join(known) or 'none'}")
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, filename, cache_dir=cache_dir)
            if isinstance(hit, str):
                return
        raise WeightsNotAvailable(
            f"The weights for open_clip {model_name}/{tag} are not in the local Hugging Face cache "
            f"and this machine cannot download them. On a machine with internet run\n"
            f"  huggingface-cli download {hub_id} open_clip_model.safetensors\n"
            f"(or python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
            f"pretrained='{tag}')\") and copy ~/.cache/huggingface/hub here (or set HF_HOME).")
    url = cfg.get("url", "")
    target = Path(cache_dir or Path.home() / ".cache" / "clip") / Path(url).name
    if not target.exists():
        raise WeightsNotAvailable(f"The weights for open_clip {model_name}/{tag} are not cached at "
                                  f"{target}. Download {url} there on a machine with internet.")
    logging.info("using cached %s", target)
