"""Our CLIP's text tower as HF CLIPTextModel + CLIPTokenizer: ids, hidden states, save/load,
textual inversion and a diffusers pipeline, all exact against open_clip."""
import open_clip
import pytest
import torch

from clipgpt_core import load_bundle
from clipgpt_core.models.clip import ClipEncoder
from clipgpt_core.models.hf_text import EOT, PAD, SOT, text_encoder_from_clip, tokenizer_from_clip
from clipgpt_core.world.scenes import example

LONG = "a big red star next to a small blue circle above a green square " * 8   # > 77 tokens

TEXTS = [example(seed).caption for seed in range(5)] + [
    "A Large RED Star On A Black Background",          # mixed case: both lower-case
    "a red star! wow!! really?! (yes) -- 3.5 stars, 'cause it's \"big\"; ok...",
    "   two   blue\tcircles \n in  the   corner  ",     # extra whitespace: both collapse it
    "",                                                 # just <start> <end>
    "café naïve ﬁne &amp; don’t",                       # ftfy fixes and one html entity: both
    "!@#$ %^&*",                                        # '!' as a non-final BPE piece is id 0
    LONG,
]


def quick_gelu_clip():
    """A tiny random CLIP built with QuickGELU, as OpenAI-pretrained configs are."""
    model = open_clip.create_model("shapes-clip", force_quick_gelu=True).eval()
    return ClipEncoder(model, None, open_clip.get_tokenizer("shapes-clip"), "shapes-clip")


@pytest.fixture(scope="module", params=["shapes", "ViT-B-32", "quick_gelu"])
def clip(request):
    if request.param == "shapes":
        return load_bundle("shapes").clip
    if request.param == "ViT-B-32":
        return load_bundle("open_clip:ViT-B-32/random-init").clip
    return quick_gelu_clip()


def open_clip_states(model, ids):
    """open_clip's text tower up to the final norm, every position: (B, T) -> (B, T, W)."""
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


def hf_ids(tokenizer, texts):
    """What diffusers' StableDiffusionPipeline.encode_prompt asks of the tokenizer."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def test_tokenizer_ids_equal_open_clip(clip):
    tok = tokenizer_from_clip(clip)
    ctx = clip.tokenizer.context_length
    assert tok.model_max_length == ctx == clip.model.positional_embedding.shape[0]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (SOT, EOT, PAD)
    assert torch.equal(hf_ids(tok, TEXTS), clip.tokenizer(TEXTS))
    assert tok("a red star!").input_ids[-2] == 256           # '!</w>', not the pad id 0


def test_truncation_keeps_end_of_text_like_open_clip(clip):
    """open_clip cuts to context_length and overwrites the last id with <end>; HF cuts the text
    to context_length - 2 and adds <start>, <end>: the same ids."""
    tok, ctx = tokenizer_from_clip(clip), clip.tokenizer.context_length
    full = tok(LONG).input_ids
    assert len(full) > ctx                                     # diffusers' "truncated" warning sees this
    ids = hf_ids(tok, [LONG])[0]
    assert ids[-1] == EOT and ids[0] == SOT and torch.equal(ids[:-1], torch.tensor(full[:ctx - 1]))
    assert torch.equal(ids, clip.tokenizer([LONG])[0])


def test_known_tokenizer_differences():
    """The edges where HF's CLIPTokenizer and open_clip's disagree (see hf_text's notes)."""
    clip = load_bundle("shapes").clip
    tok = tokenizer_from_clip(clip)
    for text in ["<b>&amp;</b>",                  # '<' in the text: ftfy leaves the entity, open_clip unescapes
                 "a <|endoftext|> b",             # HF splits its special names out of text
                 "a <start_of_text> b"]:          # open_clip splits its own
        assert not torch.equal(hf_ids(tok, [text]), clip.tokenizer([text])), text
    # decoding: id 0 is the pad token, so a '!' piece (not '!</w>') is skipped with the padding
    assert tok.decode(clip.tokenizer(["!@#$ a"])[0], skip_special_tokens=True) == "@#$ a"


def test_text_encoder_equals_open_clip(clip):
    te = text_encoder_from_clip(clip)
    cfg, text_cfg = te.config, open_clip.get_model_config(clip.model_name)
    assert not te.training and te.dtype == torch.float32
    quick = isinstance(clip.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert cfg.hidden_act == ("quick_gelu" if quick else "gelu")
    assert quick == (clip.model_name == "shapes-clip" and clip.pretrained is None)   # only quick_gelu_clip()
    assert not text_cfg.get("quick_gelu", False)                                     # ViT-B-32 itself: GELU
    assert (cfg.max_position_embeddings, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.vocab_size) == tuple(text_cfg["text_cfg"][k] for k in
                                     ("context_length", "width", "layers", "heads", "vocab_size"))
    assert cfg.intermediate_size == 4 * cfg.hidden_size and cfg.projection_dim == text_cfg["embed_dim"]
    assert cfg.layer_norm_eps == 1e-5 and cfg.eos_token_id == EOT

    ids = clip.tokenizer(TEXTS)                                                # (B, T)
    with torch.no_grad():
        out = te(ids)
        embeds = clip.model.encode_text(ids)                                   # (B, D)
        with_proj = text_encoder_from_clip(clip, with_projection=True)(ids[:3]).text_embeds   # (3, D)
    torch.testing.assert_close(out.last_hidden_state, open_clip_states(clip.model, ids), atol=1e-5, rtol=0)
    # CLIPTextModel has no projection: pooled <end> state @ open_clip's text_projection
    torch.testing.assert_close(out.pooler_output @ clip.model.text_projection, embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_proj, embeds[:3], atol=1e-5, rtol=1e-5)


def test_save_pretrained_round_trip(clip, tmp_path):
    from transformers import CLIPTextModel, CLIPTokenizer
    te, tok = text_encoder_from_clip(clip), tokenizer_from_clip(clip, tmp_path / "src")
    te.save_pretrained(tmp_path / "text_encoder")
    tok.save_pretrained(tmp_path / "tokenizer")
    te2 = CLIPTextModel.from_pretrained(tmp_path / "text_encoder").eval()
    tok2 = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert (tok2.pad_token, tok2.pad_token_id, tok2.model_max_length, len(tok2)) == \
           (tok.pad_token, PAD, tok.model_max_length, len(tok))
    ids = hf_ids(tok2, TEXTS)
    assert torch.equal(ids, clip.tokenizer(TEXTS))
    with torch.no_grad():
        a, b = te(ids), te2(ids)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(a.pooler_output, b.pooler_output)


def test_textual_inversion():
    """What diffusers' load_textual_inversion does: add a token, grow the embedding, set its row."""
    clip = load_bundle("shapes").clip
    te, tok = text_encoder_from_clip(clip), tokenizer_from_clip(clip)
    vector = torch.randn(te.config.hidden_size)                               # (W,)
    assert tok.add_tokens(["<concept>"]) == 1
    new_id = tok.convert_tokens_to_ids("<concept>")
    assert new_id == len(tok) - 1 == 49409           # 49408 is the slot the '<|pad|>' string takes
    te.resize_token_embeddings(len(tok))
    with torch.no_grad():
        te.get_input_embeddings().weight[new_id] = vector
    ids = hf_ids(tok, ["a photo of <concept> on a black background"])[0]
    assert ids.tolist()[:5] == [SOT, 320, 1125, 539, new_id]                   # <start> a photo of <concept>
    with torch.no_grad():
        pooled = te(ids[None]).pooler_output[0]      # pooled at the first <end>, not at argmax(ids)
        assert torch.equal(te.get_input_embeddings()(ids)[4], vector)
    end = ids.tolist().index(EOT)
    with torch.no_grad():
        assert torch.equal(pooled, te(ids[None]).last_hidden_state[0, end])
    # ids without the new token are unchanged
    assert torch.equal(hf_ids(tok, TEXTS[:5]), clip.tokenizer(TEXTS[:5]))


def tiny_pipeline(clip):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    te = text_encoder_from_clip(clip)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=te.config.hidden_size, norm_num_groups=2, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer_from_clip(clip), unet=unet,
                                   scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def test_stable_diffusion_pipeline_uses_the_clip_text_tower():
    """A (tiny, untrained) StableDiffusionPipeline conditions on exactly open_clip's states, runs,
    and loads a textual inversion embedding through diffusers itself."""
    clip = load_bundle("shapes").clip
    pipe = tiny_pipeline(clip)
    prompt = "a large red star on a black background!"
    embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, do_classifier_free_guidance=False)   # (1, T, W)
    torch.testing.assert_close(embeds, open_clip_states(clip.model, clip.tokenizer([prompt])), atol=1e-5, rtol=0)
    image = pipe(prompt, num_inference_steps=2, height=16, width=16, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3)

    vector = torch.randn(pipe.text_encoder.config.hidden_size)
    pipe.load_textual_inversion(vector, token="<shape-x>")
    new_id = pipe.tokenizer.convert_tokens_to_ids("<shape-x>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[new_id], vector)
    assert new_id in hf_ids(pipe.tokenizer, ["a <shape-x> on a black background"])[0].tolist()
