"""Seed 000's published CLIP GPT (github.com/noanabeshima/clip_gpt, `clip_gpt.pt`) -> the project's caption prior.

The published file is a whole pickled `clip_gpt.clip_gpt.CLIPGPT` module: OpenAI CLIP's text tower
(`token_embedding`, `positional_embedding`, a `clip.model.Transformer`, `ln_final`) plus `deembed`, an untied
Linear head with a bias. It is read by the restricted unpickler (unpickle.py: nothing from the file runs), its
sizes read from the tensors (width from the embedding, layers from the blocks, heads from the pickled attention
module or width / 64 as CLIP does), and written as a prior component (safetensors + prior_config.json) in the
file's own dtype. The causal mask is not in the state; CaptionGPT builds its own.

    python -m clipgpt_app convert clip-gpt clip_gpt.pt --out my_bundle/prior     # = clipgpt convert clip-gpt ...

A state dict of the same keys (torch.save(model.state_dict()) or .safetensors) converts too.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from ..errors import BundleError, ClipGPTError
from .unpickle import attribute, load_module_pickle, module_state

EXPECTED = ("a CLIP GPT checkpoint: seed 000's clip_gpt.pt (a pickled CLIPGPT module) or its state dict, with "
            "token_embedding.weight, positional_embedding, transformer.resblocks.N.*, ln_final.* and deembed.*")
# which open_clip model's tokenizer a width names: every OpenAI CLIP uses the same 49408-token BPE, context 77
TOKENIZER_BY_WIDTH = {512: "ViT-B-32", 640: "RN50x4", 768: "ViT-L-14", 1024: "ViT-H-14"}


def read_checkpoint(src: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (state dict, what the pickle says beyond tensors: heads, activation, class path)."""
    src = Path(src)
    if src.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return dict(load_file(src)), {"class_path": "safetensors"}
        except Exception as e:
            raise BundleError(f"{src.name} is not a readable safetensors file ({type(e).__name__}); expected {EXPECTED}")
    root = load_module_pickle(src)
    if isinstance(root, dict):
        if root and all(isinstance(v, torch.Tensor) for v in root.values()):
            return dict(root), {"class_path": "state dict"}
        for key in ("model", "state_dict", "module"):      # common wrappers around a model or state dict
            if key in root:
                root = root[key]
                break
        if isinstance(root, dict):
            return {k: v for k, v in root.items() if isinstance(v, torch.Tensor)}, {"class_path": "state dict"}
    gelu = attribute(root, "transformer.resblocks.0.mlp.gelu")
    info = {"class_path": getattr(root, "class_path", type(root).__name__),
            "heads": attribute(root, "transformer.resblocks.0.attn.num_heads"),
            "act": type(gelu).__name__ if gelu is not None else None,
            "act_path": getattr(gelu, "class_path", None)}
    return dict(module_state(root)), info


def prior_config(state: dict[str, torch.Tensor], info: dict, name: str):
    """Sizes from the tensors; what tensors cannot say (heads, activation) from the pickle or CLIP's convention."""
    from ..models.caption_prior import PriorConfig
    if any(k.startswith("visual.") for k in state):
        raise BundleError(f"{name} holds an image tower (visual.*): it is a CLIP checkpoint, not CLIP GPT. "
                          f"Expected {EXPECTED}. (A CLIP goes in with `clipgpt bundle --clip ...`.)")
    missing = [k for k in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "deembed.weight")
               if k not in state]
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    if missing or not blocks:
        found = ", ".join(list(state)[:6]) or "no tensors"
        hint = " (no deembed head: an untrained CLIP text tower, not CLIP GPT)" if missing == ["deembed.weight"] else ""
        raise BundleError(f"{name} is not {EXPECTED}; missing {', '.join(missing) or 'transformer.resblocks.*'}"
                          f"{hint}; it holds {found}, ...")
    vocab, width = state["token_embedding.weight"].shape
    context = state["positional_embedding"].shape[0]
    fc = state["transformer.resblocks.0.mlp.c_fc.weight"]
    heads = int(info.get("heads") or width // 64)
    if width % heads:
        raise BundleError(f"{name}: width {width} does not split into {heads} heads")
    if tuple(state["deembed.weight"].shape) != (vocab, width):
        raise BundleError(f"{name}: deembed is {tuple(state['deembed.weight'].shape)}, expected ({vocab}, {width})")
    # OpenAI CLIP's blocks use QuickGELU (clip.model.QuickGELU); a pickle that names plain GELU gets GELU
    act = "gelu" if info.get("act") == "GELU" and "QuickGELU" not in str(info.get("act_path")) else "quick_gelu"
    return PriorConfig(vocab_size=vocab, context_length=context, width=width, heads=heads, layers=len(blocks),
                       mlp_ratio=fc.shape[0] / width, act=act, tie_head=False,
                       head_bias="deembed.bias" in state, tokenizer=TOKENIZER_BY_WIDTH.get(width, "ViT-L-14"))


def convert_clip_gpt(src: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """clip_gpt.pt -> a prior component folder (CaptionPrior.load reads it). dtype: the file's own by default."""
    from ..models.caption_prior import CaptionGPT, CaptionPrior
    src = Path(src)
    state, info = read_checkpoint(src)
    cfg = prior_config(state, info, src.name)
    renamed = {("lm_head." + k[len("deembed."):] if k.startswith("deembed.") else k): v for k, v in state.items()}
    gpt = CaptionGPT(cfg)
    wanted = gpt.state_dict()
    unexpected = sorted(set(renamed) - set(wanted))
    missing = sorted(set(wanted) - set(renamed))
    if unexpected or missing:
        raise BundleError(f"{src.name} does not fit a {cfg.layers}-layer, {cfg.width}-wide CLIP GPT: missing "
                          f"{missing[:4]}, unexpected {unexpected[:4]}")
    wrong = [k for k, v in renamed.items() if tuple(v.shape) != tuple(wanted[k].shape)]
    if wrong:
        raise BundleError(f"{src.name}: {wrong[0]} is {tuple(renamed[wrong[0]].shape)}, expected "
                          f"{tuple(wanted[wrong[0]].shape)}")
    source_dtype = state["token_embedding.weight"].dtype
    gpt.load_state_dict({k: v.float() for k, v in renamed.items()})
    if not all(torch.isfinite(p).all() for p in gpt.parameters()):
        raise BundleError(f"{src.name} holds non-finite weights (NaN or inf)")
    prior = CaptionPrior(gpt)
    out = Path(out)
    prior.save(out, dtype=dtype or source_dtype)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="clipgpt convert clip-gpt",
                                description="Convert seed 000's clip_gpt.pt to a caption prior (safetensors + JSON), "
                                            "reading it without running anything from the file.")
    p.add_argument("src", help="clip_gpt.pt (or a state dict .pt / .safetensors of the same keys)")
    p.add_argument("--out", required=True, help="the prior folder to write (e.g. my_bundle/prior)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="stored dtype (default: the file's own)")
    args = p.parse_args(argv)
    try:
        out = convert_clip_gpt(args.src, args.out, getattr(torch, args.dtype) if args.dtype else None)
    except ClipGPTError as e:
        sys.exit(f"clipgpt convert clip-gpt: {e}")
    print(f"wrote {out} (load it with CaptionPrior.load, or name it in `clipgpt bundle --prior {out}`)")
