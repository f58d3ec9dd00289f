"""ClipCap's published captioners (rmokady/CLIP_prefix_caption, MIT) in the workbench.

A published checkpoint is `torch.save(ClipCaptionModel(...).state_dict())`: GPT-2 under `gpt.*` (made with
transformers 4.11, so with `attn.bias` / `attn.masked_bias` buffers, dropped here) and the mapper under
`clip_project.*`: an MLP (`model.0`, Tanh, `model.2`; prefix 10, ViT-B/32's raw `encode_image` output), one Linear
(prefix over 10), or the transformer mapper (`linear`, `prefix_const`, `transformer.layers.*`; RN50x4, L2-normalised
input). `convert_clipcap` reads it with `torch.load(weights_only=True)` (or a .safetensors state dict: nothing in
the file runs), reads every size from the tensors, and writes a captioner folder of safetensors and JSON:

    captioner_config.json    {"kind": "clipcap_gpt2", "clip": "ViT-B-32/openai", "prefix_length": 10, "mapper": "mlp", ...}
    mapper_config.json + mapper.safetensors      the mapper (captioner.PrefixMapper, or TransformerMapper here)
    gpt2/                    GPT-2's config.json, model.safetensors and tokenizer (gpt2_decoder.Gpt2Decoder)

`load_clipcap(folder, clip, prior)` gives the project's Captioner on it: KV-cached beam search ranked as ClipCap's
generate_beam ranks (mean log p per token; 67 tokens at most, "." ends a caption and stays in it), greedy and
sampling, then CLIP re-ranking; its log-probabilities are ClipCap's (the caption's tokens after the prefix)."""
from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import BundleError, ClipGPTError
from ..models.captioner import (CONFIG_FILE as MAPPER_CONFIG, PUBLISHED_CONFIG, WEIGHTS_FILE as MAPPER_WEIGHTS,
                                Captioner, MapperConfig, PrefixMapper)
from ..models.component import load_module, save_component
from ..models.gpt2_decoder import TOKENIZER_FILES, Gpt2Decoder

KIND = "clipcap_gpt2"
EXPECTED = "a ClipCap state dict (gpt.* and clip_project.* keys)"
DROPPED = (".attn.bias", ".attn.masked_bias")          # transformers 4.11's causal-mask buffers, not weights
MAX_NEW_TOKENS, STOP = 67, "."                          # ClipCap's generate_beam / generate2
DEFAULT_CLIP = {"mlp": "ViT-B-32/openai", "linear": "ViT-B-32/openai", "transformer": "RN50x4/openai"}
GPT2_FILES = ("config.json", *TOKENIZER_FILES)      # what a GPT-2 Hub repo always has, and all we read
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass
class TransformerMapperConfig:
    clip_dim: int = 640
    gpt_width: int = 768
    prefix_length: int = 40
    clip_length: int = 40
    layers: int = 8
    heads: int = 8              # fixed at 8 in the published TransformerMapper
    mlp_ratio: float = 2.0
    kind: str = "transformer"
    raw_input: bool = False     # the published transformer mappers read L2-normalised embeddings
    input_norm: float = 0.0


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_queries = nn.Linear(width, width, bias=False)
        self.to_keys_values = nn.Linear(width, 2 * width, bias=False)
        self.project = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.to_queries(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.to_keys_values(x).view(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.project(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = _Attention(width, heads), _Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerMapper(nn.Module):
    """ClipCap's transformer mapper: the CLIP embedding -> clip_length tokens, followed by prefix_length learned
    constants, through pre-norm self-attention layers (ReLU MLP); the constants' outputs are the prefix. Its
    parameter names are the published ones, so a checkpoint's clip_project.* loads as it is."""

    def __init__(self, cfg: TransformerMapperConfig):
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(cfg.clip_dim, cfg.clip_length * cfg.gpt_width)
        self.prefix_const = nn.Parameter(torch.zeros(cfg.prefix_length, cfg.gpt_width))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(_Layer(cfg.gpt_width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        x = self.linear(image_embeds).view(image_embeds.shape[0], self.cfg.clip_length, -1)
        x = torch.cat([x, self.prefix_const.expand(x.shape[0], -1, -1)], dim=1)
        for layer in self.transformer.layers:
            x = layer(x)
        return x[:, self.cfg.clip_length:]

    def save(self, directory: str | Path) -> None:
        save_component(directory, self, self.cfg, MAPPER_WEIGHTS, MAPPER_CONFIG)

    @classmethod
    def load(cls, directory: str | Path) -> "TransformerMapper":
        return load_module(cls, TransformerMapperConfig, directory, MAPPER_WEIGHTS, MAPPER_CONFIG)


# -- reading a checkpoint ------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    """The error's first sentence (torch's go on with advice on loading the file some other way)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.split(r"(?<=\.) ", line)[0][:300]


def read_state(src: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name. Nothing in the file runs: torch.load(weights_only=True) refuses a pickle
    that needs more than tensors and containers, and that refusal, a truncated file or one that is not a state dict
    is a BundleError naming the file and what was expected."""
    src = Path(src)
    if not src.is_file():
        raise BundleError(f"{src}: no such file; expected {EXPECTED}")
    try:
        with warnings.catch_warnings():          # torch's notes on a pickle's protocol: the error below says it
            warnings.simplefilter("ignore")
            state = load_file(src) if src.suffix == ".safetensors" else \
                torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise BundleError(f"{src} is not {EXPECTED}: it holds Python objects beyond tensors"
                          f"{' (' + needs.group(1) + ')' if needs else ''}, which are not loaded (torch.load with "
                          f"weights_only=True refused it)") from None
    except Exception as e:       # a truncated zip or pickle, a safetensors header that does not parse, ...
        raise BundleError(f"{src} could not be read as {EXPECTED} ({type(e).__name__}: {_first_line(e)}); "
                          f"a truncated or damaged download? Fetch it again") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{src} is not {EXPECTED}: it holds a {type(state).__name__}, not tensors by name")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith("gpt.") for k in state) or not any(k.startswith("clip_project.") for k in state):
        hint = " (it looks like a CLIP's)" if any(k.startswith("visual.") for k in state) else ""
        raise BundleError(f"{src} is not {EXPECTED}: its {len(state)} tensors{hint} begin "
                          f"{', '.join(sorted(state)[:4]) or 'nowhere'}")
    other = sorted(k for k in state if not k.startswith(("gpt.", "clip_project.")))
    if other:
        raise BundleError(f"{src} is not {EXPECTED}: it also holds {', '.join(other[:4])}")
    return state


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """-> (GPT-2's state without the 4.11 mask buffers, the mapper's), prefixes removed."""
    gpt = {k[len("gpt."):]: v for k, v in state.items() if k.startswith("gpt.") and not k.endswith(DROPPED)}
    mapper = {k[len("clip_project."):]: v for k, v in state.items() if k.startswith("clip_project.")}
    return gpt, mapper


def mapper_from_state(state: dict[str, torch.Tensor], width: int, raw_input: bool | None, src) -> nn.Module:
    """The mapper its keys say it is (MLP, Linear or transformer), sized from its tensors and loaded."""
    keys = set(state)
    try:
        if keys == {"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"}:
            hidden, clip_dim = state["model.0.weight"].shape
            cfg = MapperConfig(clip_dim, width, _prefix(state["model.2.weight"], width, src), hidden, "mlp",
                               True if raw_input is None else raw_input)
            mapper = PrefixMapper(cfg)
            mapper.load_state_dict({"net." + k[len("model."):]: v for k, v in state.items()})
        elif keys == {"weight", "bias"}:
            cfg = MapperConfig(state["weight"].shape[1], width, _prefix(state["weight"], width, src), 0, "linear",
                               True if raw_input is None else raw_input)
            mapper = PrefixMapper(cfg)
            mapper.load_state_dict({"net." + k: v for k, v in state.items()})
        elif {"linear.weight", "prefix_const"} <= keys:
            layers = {int(k.split(".")[2]) for k in keys if k.startswith("transformer.layers.")}
            prefix, _ = state["prefix_const"].shape
            cfg = TransformerMapperConfig(state["linear.weight"].shape[1], width, prefix,
                                          _prefix(state["linear.weight"], width, src), len(layers),
                                          raw_input=bool(raw_input))
            mapper = TransformerMapper(cfg)
            mapper.load_state_dict(state)
        else:
            raise BundleError(f"{src}: clip_project.* is none of ClipCap's mappers (an MLP model.0/model.2, one "
                              f"Linear, or the transformer mapper); it holds {', '.join(sorted(keys)[:6])}")
    except (RuntimeError, ValueError) as e:
        if isinstance(e, ClipGPTError):
            raise
        raise BundleError(f"{src}: clip_project.* does not fit ClipCap's mapper: {_first_line(e)}") from None
    return mapper.eval()


def _prefix(weight: torch.Tensor, width: int, src) -> int:
    if weight.shape[0] % width:
        raise BundleError(f"{src}: the mapper's output ({weight.shape[0]}) is not a whole number of GPT-2 "
                          f"embeddings ({width} wide)")
    return weight.shape[0] // width


def gpt2_folder(gpt2: str | Path) -> Path:
    """A folder holding GPT-2's config.json, vocab.json and merges.txt, or a Hub id fetched into one."""
    path = Path(gpt2)
    if not path.is_dir():
        if path.exists() or not HUB_ID.fullmatch(str(gpt2)):
            raise BundleError(f"--gpt2 {gpt2}: expected a folder holding GPT-2's config.json, vocab.json and "
                              f"merges.txt, or a Hugging Face Hub id such as openai-community/gpt2")
        try:
            from .fetch import hub_files
        except ImportError:
            raise BundleError(f"--gpt2 {gpt2}: no folder of that name, and fetching from the Hub is not available "
                              f"here; pass a folder holding GPT-2's config.json, vocab.json and merges.txt") from None
        path = Path(hub_files(str(gpt2), GPT2_FILES))
    missing = [f for f in GPT2_FILES if not (path / f).is_file()]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}: expected GPT-2's config.json and tokenizer "
                          f"(vocab.json, merges.txt), e.g. those of openai-community/gpt2")
    return path


def gpt2_from_state(state: dict[str, torch.Tensor], folder: Path, src):
    """GPT2LMHeadModel with the checkpoint's weights: layers, width, vocabulary and positions from the tensors,
    heads (and the rest) from the folder's config.json."""
    from transformers import GPT2Config, GPT2LMHeadModel
    try:
        config = GPT2Config.from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise BundleError(f"{folder / 'config.json'} is not a GPT-2 config: {_first_line(e)}") from None
    need = ("transformer.wte.weight", "transformer.wpe.weight")
    layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.h.")}
    if any(k not in state for k in need) or not layers:
        raise BundleError(f"{src} is not {EXPECTED}: gpt.* lacks GPT-2's {', '.join(need)} or its blocks")
    wte = state["transformer.wte.weight"]
    config.vocab_size, config.n_embd = wte.shape
    config.n_positions, config.n_layer = state["transformer.wpe.weight"].shape[0], max(layers) + 1
    if config.n_embd % config.n_head:
        raise BundleError(f"{folder / 'config.json'} says {config.n_head} heads, which do not divide the "
                          f"checkpoint's width {config.n_embd}")
    head = state.get("lm_head.weight")
    config.tie_word_embeddings = head is None or torch.equal(head, wte)
    model = GPT2LMHeadModel(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise BundleError(f"{src}: gpt.* does not fit GPT-2 as {folder / 'config.json'} describes it: "
                          f"{_first_line(e)}") from None
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BundleError(f"{src} is incomplete; expected {EXPECTED}: GPT-2 misses {', '.join(missing[:4]) or 'nothing'}"
                          f"{'; unexpected ' + ', '.join(unexpected[:4]) if unexpected else ''}")
    return model.eval()


# -- converting and loading ------------------------------------------------------------------------
def convert_clipcap(src: str | Path, gpt2: str | Path, out: str | Path, clip: str | None = None,
                    raw_input: bool | None = None) -> Path:
    """A published ClipCap checkpoint -> a captioner folder (see the module's docstring). gpt2: a folder with
    GPT-2's config.json, vocab.json, merges.txt, or a Hub id. clip: the open_clip ARCH/TAG it reads (default:
    ViT-B-32/openai, RN50x4/openai for the transformer mapper). raw_input: whether the mapper reads raw CLIP
    features (default: yes for the MLP and Linear mappers, as published; no for the transformer)."""
    from transformers import GPT2Tokenizer
    src = Path(src)
    gstate, mstate = split_state(read_state(src))
    folder = gpt2_folder(gpt2)
    model = gpt2_from_state(gstate, folder, src)
    mapper = mapper_from_state(mstate, model.config.n_embd, raw_input, src)
    clip = clip or DEFAULT_CLIP[mapper.cfg.kind]
    _check_clip(clip, mapper.cfg.clip_dim)
    decoder = Gpt2Decoder(model, GPT2Tokenizer.from_pretrained(folder), mapper.cfg.prefix_length, MAX_NEW_TOKENS, STOP)
    config = {"kind": KIND, "clip": clip, "prefix_length": mapper.cfg.prefix_length, "mapper": mapper.cfg.kind,
              "input": "raw" if mapper.cfg.raw_input else "normalised", "source": src.name,
              "max_new_tokens": MAX_NEW_TOKENS, "stop": STOP, "gpt2": {"layers": model.config.n_layer,
              "width": model.config.n_embd, "heads": model.config.n_head, "vocab": model.config.vocab_size}}
    out = Path(out)
    Captioner(None, None, mapper, decoder=decoder, config=config).save(out)
    return out


def _check_clip(clip: str, dim: int) -> None:
    import open_clip
    arch, _, tag = clip.partition("/")
    if not tag:
        raise BundleError(f"--clip {clip}: expected an open_clip ARCH/TAG such as ViT-B-32/openai")
    known = open_clip.get_model_config(arch)
    if known is not None and known.get("embed_dim") != dim:
        raise BundleError(f"the mapper reads {dim}-wide CLIP embeddings, and {arch} gives {known.get('embed_dim')}: "
                          f"name the CLIP it was trained on with --clip (ClipCap's: ViT-B-32/openai, RN50x4/openai)")


def is_clipcap(directory: str | Path) -> bool:
    """Whether a captioner folder holds a converted ClipCap captioner."""
    path = Path(directory) / PUBLISHED_CONFIG
    return path.is_file() and json.loads(path.read_text()).get("kind") == KIND


def load_clipcap(directory: str | Path, clip, prior=None, device: str = "cpu", **captioner_kwargs) -> Captioner:
    """A converted ClipCap folder -> the project's Captioner on it. clip: the ClipEncoder it reads (its
    captioner_config.json names which; its embeddings must be as wide as the mapper reads); prior: the bundle's
    caption prior (only a captioner without a mapper uses it)."""
    directory = Path(directory)
    if not is_clipcap(directory):
        raise BundleError(f"{directory} is not a converted ClipCap captioner: expected {PUBLISHED_CONFIG} with "
                          f"kind {KIND!r} (write one with `clipgpt convert clipcap`)")
    config = json.loads((directory / PUBLISHED_CONFIG).read_text())
    try:
        kind = json.loads((directory / MAPPER_CONFIG).read_text()).get("kind", "mlp")
        mapper = (TransformerMapper if kind == "transformer" else PrefixMapper).load(directory).to(device)
    except FileNotFoundError as e:
        raise BundleError(f"{directory} lacks the mapper ({MAPPER_CONFIG}, {MAPPER_WEIGHTS}): {e.filename}") from None
    if clip is not None and clip.dim != mapper.cfg.clip_dim:
        raise BundleError(f"{directory} reads {mapper.cfg.clip_dim}-wide embeddings of {config['clip']}; this CLIP "
                          f"({clip.model_name}) gives {clip.dim}")
    decoder = Gpt2Decoder.load(directory, mapper.cfg.prefix_length, config.get("max_new_tokens", MAX_NEW_TOKENS),
                               config.get("stop", STOP), device)
    return Captioner(clip, prior, mapper, decoder=decoder, config=config, **captioner_kwargs)


def main(argv: list[str] | None = None) -> int:
    """clipgpt convert clipcap SRC --gpt2 DIR_OR_HUB_ID --out DIR [--clip ARCH/TAG]"""
    parser = argparse.ArgumentParser(prog="clipgpt convert clipcap",
                                     description="Convert a published ClipCap checkpoint into a captioner folder.")
    parser.add_argument("src", help="the checkpoint (coco_weights.pt, conceptual_weights.pt, or a .safetensors)")
    parser.add_argument("--gpt2", required=True, help="a folder with GPT-2's config.json, vocab.json and merges.txt, "
                                                      "or a Hub id (openai-community/gpt2)")
    parser.add_argument("--out", required=True, help="the captioner folder to write")
    parser.add_argument("--clip", default=None, help="the open_clip ARCH/TAG it reads (default: ViT-B-32/openai; "
                                                     "RN50x4/openai for the transformer mapper)")
    parser.add_argument("--input", choices=("raw", "normalised"), default=None,
                        help="what the mapper reads (default: raw for the MLP and Linear mappers, as published)")
    args = parser.parse_args(argv)
    try:
        out = convert_clipcap(args.src, args.gpt2, args.out, args.clip,
                              None if args.input is None else args.input == "raw")
    except ClipGPTError as e:
        print(f"clipgpt convert clipcap: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(out)
    return 0
