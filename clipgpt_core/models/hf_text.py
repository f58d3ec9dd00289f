"""Our CLIP's text tower as a Hugging Face `CLIPTextModel` + `CLIPTokenizer`.

That is what diffusers expects of a text encoder (StableDiffusionPipeline conditions on
last_hidden_state; `load_textual_inversion` adds tokens and rows), so any open_clip CLIP here,
the built-in one included, can drive a diffusion pipeline:

    text_encoder = text_encoder_from_clip(bundle.clip)      # weights copied exactly, eval, fp32
    tokenizer = tokenizer_from_clip(bundle.clip)             # ids equal clip.tokenizer's
    pipe = StableDiffusionPipeline(..., text_encoder=text_encoder, tokenizer=tokenizer)

Differences from open_clip, all at the edges (tests/test_hf_text.py pins them):
- Padding: open_clip pads with id 0, the vocabulary's "!". HF would make a pad token "!" (as
  Stable Diffusion 2's tokenizer does) an added token, so a "!" typed in a prompt would be split
  out as padding (id 0, not open_clip's "!</w>" 256). We pad with "<|pad|>", an added token bound
  to id 0 instead: every text's ids match. The cost: the tokenizer's vocabulary counts one more
  string (len(tokenizer) == 49409), so tokens added later start at 49409; id 49408 is never used.
- HF splits "<|startoftext|>" / "<|endoftext|>" / "<|pad|>" typed in a text out as special
  tokens; open_clip splits out "<start_of_text>" / "<end_of_text>" instead.
- HF cleans text with ftfy only; open_clip also html-unescapes twice. ftfy unescapes entities
  itself unless the text contains "<", so only "<b>&amp;</b>"-like text differs.
- decode(..., skip_special_tokens=True) also drops a "!" BPE piece (id 0, as in "!@#"): it is the pad id.
- Truncation agrees: both keep <|endoftext|> as the last of context_length tokens.
- Only the slow CLIPTokenizer (what diffusers' pipelines name and load) is exact: the converted
  CLIPTokenizerFast (AutoTokenizer's default) skips ftfy and gives '<|pad|>' a new id, 49408.
- Pooling: HF pools at the first <|endoftext|> (config eos_token_id 49407), open_clip at the
  largest id; the same until textual inversion adds ids above 49407, where HF's is the right one.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch
from transformers import AddedToken, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..errors import BundleError
from .clip import text_tower

SOT, EOT, PAD = 49406, 49407, 0
PAD_TOKEN = "<|pad|>"
# open_clip's special tokens -> the names HF's CLIPTokenizer hard-codes (its regex and cache)
SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def text_config(clip) -> CLIPTextConfig:
    text = text_tower(clip.model)
    if not hasattr(text, "transformer") or not hasattr(text.transformer, "resblocks"):
        raise BundleError(f"{clip.model_name}: only open_clip's own text transformer converts (not HF/timm towers)")
    blocks = text.transformer.resblocks
    blk = blocks[0]
    # what CLIPTextModel has no slot for: layer scale, extra norms, non-argmax pooling, a class token
    if not (isinstance(blk.ls_1, torch.nn.Identity) and isinstance(blk.attn, torch.nn.MultiheadAttention)
            and getattr(text, "text_pool_type", "argmax") == "argmax" and getattr(text, "cls_emb", None) is None):
        raise BundleError(f"{clip.model_name}: this text tower has parts CLIPTextModel cannot express")
    proj = text.text_projection
    return CLIPTextConfig(
        vocab_size=text.token_embedding.num_embeddings,
        hidden_size=text.transformer.width,
        intermediate_size=blk.mlp.c_fc.out_features,                      # mlp_ratio * width
        projection_dim=proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features,
        num_hidden_layers=len(blocks),
        num_attention_heads=blk.attn.num_heads,
        max_position_embeddings=text.positional_embedding.shape[0],      # context_length
        # OpenAI-pretrained configs (quick_gelu=True) use x*sigmoid(1.702x); the rest exact GELU
        hidden_act="quick_gelu" if isinstance(blk.mlp.gelu, open_clip.transformer.QuickGELU) else "gelu",
        layer_norm_eps=text.ln_final.eps,                                 # 1e-5, open_clip's LayerNorm
        attention_dropout=0.0,
        bos_token_id=SOT, eos_token_id=EOT, pad_token_id=PAD,            # eos != 2: pool at first EOT
    )


def text_encoder_from_clip(clip, with_projection: bool = False):
    """clip (ClipEncoder) -> CLIPTextModel (or CLIPTextModelWithProjection, whose text_embeds equal
    clip.model.encode_text; SDXL's second text encoder is one), eval, fp32."""
    text = text_tower(clip.model)
    cfg = text_config(clip)
    w = cfg.hidden_size
    sd = {"embeddings.token_embedding.weight": text.token_embedding.weight,          # (V, W)
          "embeddings.position_embedding.weight": text.positional_embedding,         # (T, W)
          "final_layer_norm.weight": text.ln_final.weight, "final_layer_norm.bias": text.ln_final.bias}
    for i, blk in enumerate(text.transformer.resblocks):
        p = f"encoder.layers.{i}."
        # nn.MultiheadAttention packs q, k, v into one (3W, W) projection, in that order
        for name, wt, b in zip("qkv", blk.attn.in_proj_weight.split(w), blk.attn.in_proj_bias.split(w)):
            sd[p + f"self_attn.{name}_proj.weight"], sd[p + f"self_attn.{name}_proj.bias"] = wt, b
        pairs = {"self_attn.out_proj": blk.attn.out_proj, "layer_norm1": blk.ln_1, "layer_norm2": blk.ln_2,
                 "mlp.fc1": blk.mlp.c_fc, "mlp.fc2": blk.mlp.c_proj}
        for name, module in pairs.items():
            sd[p + name + ".weight"], sd[p + name + ".bias"] = module.weight, module.bias
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = cls(cfg).float().eval()
    model.text_model.load_state_dict({k: v.detach().float() for k, v in sd.items()}, strict=True)
    if with_projection:
        proj = text.text_projection
        if isinstance(proj, torch.nn.Linear) and proj.bias is not None:
            raise BundleError(f"{clip.model_name}: a text projection with bias has no CLIPTextModelWithProjection slot")
        weight = proj.weight if isinstance(proj, torch.nn.Linear) else proj.T   # x @ P == Linear(P.T)
        model.text_projection.weight.data.copy_(weight.detach().float())       # (D, W)
    return model


def tokenizer_from_clip(clip, directory: str | Path | None = None) -> CLIPTokenizer:
    """clip (ClipEncoder) -> CLIPTokenizer whose ids equal clip.tokenizer's (see module notes).
    Writes vocab.json / merges.txt to `directory` (default: a temp dir, removed once loaded:
    CLIPTokenizer keeps its tables in memory and save_pretrained writes them from there)."""
    tok = clip.tokenizer
    if not (isinstance(tok, open_clip.tokenizer.SimpleTokenizer) and tok.reduction_fn is None
            and tok.clean_fn is open_clip.tokenizer._clean_lower and len(tok.encoder) == EOT + 1):
        raise BundleError(f"{clip.model_name}: only open_clip's plain CLIP BPE tokenizer (clean='lower') converts")
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="clipgpt-tokenizer-") as tmp:
            return tokenizer_from_clip(clip, tmp)
    # the tokenizer's own tables are what open_clip built from bpe_simple_vocab_16e6.txt.gz:
    # 256 byte chars, the same + '</w>', one entry per merge, then the two special tokens
    vocab = {SPECIAL.get(t, t): i for t, i in tok.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # CLIPTokenizer skips the first line, as open_clip skips the .gz file's header
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(
        directory / "vocab.json", directory / "merges.txt", pad_token=PAD_TOKEN,
        # bind the pad token to id 0 without making "!" itself an added (text-splitting) token
        added_tokens_decoder={PAD: AddedToken(PAD_TOKEN, lstrip=False, rstrip=False, normalized=False, special=True)},
        model_max_length=tok.context_length)
