"""ClipCap's published captioners in the workbench: stand-ins built from the published classes
(benchmarks/published_code: ClipCaptionModel, transformers' GPT-2) at random init and small sizes, converted, and
compared with the published forward pass and decoding."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2Tokenizer

from benchmarks.published_code import clipcap_model as published
from benchmarks.published_code import clipcap_transformer as published_transformer
from benchmarks.published_code.standins import G, save_as_published, write_gpt2_folder
from clipgpt_core import world
from clipgpt_core.errors import BundleError
from clipgpt_core.models.caption_prior import generate
from clipgpt_core.models.beam_search import beam_search, start_tokens
from clipgpt_core.models.captioner import raw_image_features
from clipgpt_core.models.clip import create_clip
from clipgpt_core.published.clipcap import convert_clipcap, load_clipcap, main

CLIP = "shapes-clip/random"          # a tiny registered open_clip architecture, random weights
CAPTIONS = ["a dog on the cat.", "the cat", "a dog.", "on the dog on the cat on a dog by the cat", "."]


class TokenIds:
    """The published generate_beam / generate2 return tokenizer.decode(...): this one returns the ids."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, text):
        return self.tokenizer.encode(text)

    def decode(self, ids):
        return tuple(int(i) for i in ids)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipcap")
    cfg = write_gpt2_folder(root / "gpt2")
    torch.manual_seed(0)
    clip = create_clip(CLIP.split("/")[0])
    model = published.ClipCaptionModel(10, prefix_size=clip.dim, gpt2_config=cfg).eval()
    with torch.no_grad():      # this CLIP's raw features are ~0.003 long: make the prefix depend on them
        model.clip_project.model[0].weight.mul_(1000)
    save_as_published(model, root / "coco_weights.pt")
    out = convert_clipcap(root / "coco_weights.pt", root / "gpt2", root / "out", clip=CLIP)
    images = [world.example(s, n_objects=1).image for s in range(5)]
    return {"root": root, "clip": clip, "model": model, "cap": load_clipcap(out, clip), "images": images,
            "raw": raw_image_features(clip, images), "tokenizer": GPT2Tokenizer.from_pretrained(root / "gpt2")}


def published_log_probs(model, rows, prefix_input):
    """The published forward (as its training loss reads it): caption token j from position prefix_length - 1 + j."""
    tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    mask = torch.zeros(len(rows), model.prefix_length + tokens.shape[1])
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = torch.tensor(r)
        mask[i, :model.prefix_length + len(r)] = 1
    with torch.no_grad():
        logits = model(tokens, prefix_input, mask).logits[:, model.prefix_length - 1:-1]
    logp = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    return [logp[i, :len(r)].numpy() for i, r in enumerate(rows)]


def test_converted_folder_names_its_clip_and_drops_the_mask_buffers(toy):
    out = toy["root"] / "out"
    config = json.loads((out / "captioner_config.json").read_text())
    assert config | {"source": "coco_weights.pt"} == config
    assert (config["kind"], config["clip"], config["prefix_length"], config["mapper"], config["input"]) == \
        ("clipcap_gpt2", CLIP, 10, "mlp", "raw")
    assert toy["cap"].reads_clip == CLIP
    assert {p.name for p in (out / "gpt2").iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt"}
    assert not any(k.endswith(("attn.bias", "attn.masked_bias"))
                   for k in toy["cap"].decoder.gpt.model.state_dict() if "c_attn" not in k)


def test_log_probs_equal_the_published_forward(toy):
    cap, model, raw = toy["cap"], toy["model"], toy["raw"]
    dec = cap.decoder
    rows = dec.token_rows(CAPTIONS)
    stop = toy["tokenizer"].encode(".")[0]
    assert rows == [toy["tokenizer"].encode(c.removesuffix(".")) + [stop] for c in CAPTIONS]
    picks = [0, 1, 2, 3, 4]
    prefix = cap.prefix(raw / np.linalg.norm(raw, axis=1, keepdims=True), raw)[picks]
    with torch.no_grad():
        assert torch.allclose(prefix, model.clip_project(torch.from_numpy(raw)).view(5, 10, -1)[picks], atol=1e-6)
    ours = dec.token_log_probs(CAPTIONS, prefix)
    theirs = published_log_probs(model, rows, torch.from_numpy(raw[picks]))
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    # the captioner's mean log p per token, one text per image
    assert np.allclose(cap.log_prob(toy["images"], CAPTIONS), [t.mean() for t in theirs], atol=1e-5)


def test_greedy_and_beam_decoding_equal_the_published(toy):
    """generate2 (greedy; its top-p filter never removes the argmax) and generate_beam (5 beams ranked by mean log p
    per token, finished beams padded with token 0 at no cost) without a KV cache; ours cached and batched. Published
    quirks: one image at a time, the stop token "." kept in the output (stripped to compare), and generate2 fails on
    a caption whose first token is the stop token (not one of these images)."""
    cap, model, raw = toy["cap"], toy["model"], toy["raw"]
    dec, ids = cap.decoder, TokenIds(toy["tokenizer"])
    stop = dec.cfg.eot_token
    prefix = cap.prefix(raw, raw)
    greedy = generate(dec.gpt, start_tokens(dec, len(raw), prefix.device), prefix, temperature=0)
    beams = beam_search(dec, prefix, 5, by_mean=True)
    lengths = set()
    for i in range(len(raw)):
        embed = model.clip_project(torch.from_numpy(raw[i:i + 1])).reshape(1, 10, -1)
        theirs = published.generate2(model, ids, embed=embed)
        assert greedy[i] == list(theirs[:-1] if theirs[-1] == stop else theirs)
        theirs = [list(t[:-1] if t[-1] == stop else t) for t in published.generate_beam(model, ids, embed=embed)]
        assert [b for b, _ in beams[i]] == theirs
        lengths |= {len(t) for t in theirs}
    assert min(lengths) < 40 and max(lengths) == 67                 # stopped beams and beams cut at 67 tokens
    # the captioner: its beams (decoded, "." kept) and, without re-ranking, the likeliest
    tok = toy["tokenizer"]
    best = [tok.decode(b[0][0] + [stop]).strip() for b in beams]
    assert cap.caption(toy["images"], num_beams=5, rerank=False) == best
    ranked = cap.candidates(toy["images"][:2], num_beams=5)
    assert {r["caption"] for r in ranked[0]} == {tok.decode(b + [stop]).strip() for b, _ in beams[0]}


def test_cached_decoding_equals_no_cache(toy):
    dec, raw = toy["cap"].decoder, toy["raw"]
    prefix = toy["cap"].prefix(raw, raw)
    start = start_tokens(dec, len(raw), prefix.device)
    for kw in ({"temperature": 0}, {"temperature": 1.0}):
        runs = []
        for use_cache in (True, False):
            gen = torch.Generator().manual_seed(3)
            runs.append(generate(dec.gpt, start, prefix, generator=gen, use_cache=use_cache, **kw))
        assert runs[0] == runs[1], kw
    tokens = torch.tensor([dec.token_rows(["a dog on the cat."])[0]])
    with torch.no_grad():
        x = torch.cat([prefix[:1], dec.gpt.embed(tokens)], dim=1)
        full = dec.gpt.logits(dec.gpt.hidden(x))
        cache = dec.gpt.new_cache(1, x.device, x.dtype)
        steps = [dec.gpt.logits(dec.gpt.hidden(x[:, :10], cache))] + \
            [dec.gpt.logits(dec.gpt.hidden(x[:, i:i + 1], cache)) for i in range(10, x.shape[1])]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_normalised_vectors_are_read_at_the_typical_norm(toy, tmp_path):
    """candidates_from_embeddings gets L2-normalised vectors; a raw-input mapper reads them scaled by input_norm
    (the CLIP's typical norm unless set): at an image's own norm it reads what the image gives."""
    cap, raw = toy["cap"], toy["raw"]
    assert cap.input_norm > 0
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    copy = load_clipcap(toy["root"] / "out", toy["clip"])
    copy.mapper.cfg.input_norm = float(np.linalg.norm(raw[0]))
    a, b = copy.candidates_from_embeddings(unit[:1], num_beams=3)[0], cap.candidates(toy["images"][:1], num_beams=3)[0]
    assert [r["caption"] for r in a] == [r["caption"] for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    # and a saved captioner loads as it was
    cap.save(tmp_path / "copy")
    again = load_clipcap(tmp_path / "copy", toy["clip"])
    assert again.caption(toy["images"][:2]) == cap.caption(toy["images"][:2])


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_files_are_refused_with_what_was_expected(toy, tmp_path, capsys):
    root, marker = toy["root"], tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"gpt.x": RunsACommand(marker)}, evil)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(RunsACommand(marker)))
    cut = tmp_path / "cut.pt"
    data = (root / "coco_weights.pt").read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    clip_state = tmp_path / "clip.pt"
    torch.save(toy["clip"].model.state_dict(), clip_state)
    whole = tmp_path / "module.pt"
    torch.save(toy["model"].clip_project, whole)                    # a pickled module, as clip_gpt.pt is
    holed = tmp_path / "holed.pt"
    state = torch.load(root / "coco_weights.pt", weights_only=True)
    del state["gpt.transformer.h.1.mlp.c_fc.weight"]
    torch.save(state, holed)
    cut_st = tmp_path / "cut.safetensors"
    save_file({"gpt.transformer.wte.weight": torch.zeros(4, 4)}, str(cut_st))
    cut_st.write_bytes(cut_st.read_bytes()[:40])
    expected = "a ClipCap state dict (gpt.* and clip_project.* keys)"
    for path, why in [(evil, "not loaded"), (plain, "not loaded"), (cut, "truncated"), (clip_state, "CLIP"),
                      (whole, "not loaded"), (holed, "h.1.mlp.c_fc.weight"), (cut_st, "truncated")]:
        with pytest.raises(BundleError) as err:
            convert_clipcap(path, root / "gpt2", tmp_path / "out", clip=CLIP)
        assert expected in str(err.value) and str(path) in str(err.value) and why in str(err.value), str(err.value)
        assert main([str(path), "--gpt2", str(root / "gpt2"), "--out", str(tmp_path / "out"), "--clip", CLIP]) == 2
        msg = capsys.readouterr().err
        assert msg.count("\n") == 1 and expected in msg and "Traceback" not in msg
    assert not marker.exists()
    with pytest.raises(BundleError, match="vocab.json"):
        convert_clipcap(root / "coco_weights.pt", root, tmp_path / "out", clip=CLIP)
    with pytest.raises(BundleError, match="512"):                    # ViT-B-32's embeddings, not this mapper's 128
        convert_clipcap(root / "coco_weights.pt", root / "gpt2", tmp_path / "out")


def test_a_safetensors_state_dict_converts_too(toy, tmp_path):
    state = {k: v.clone() for k, v in toy["model"].state_dict().items()}     # lm_head.weight is wte's, unshared
    save_file(state, str(tmp_path / "w.safetensors"))
    assert main([str(tmp_path / "w.safetensors"), "--gpt2", str(toy["root"] / "gpt2"), "--out", str(tmp_path / "o"),
                 "--clip", CLIP]) == 0
    cap = load_clipcap(tmp_path / "o", toy["clip"])
    assert cap.caption(toy["images"][:2], rerank=False) == toy["cap"].caption(toy["images"][:2], rerank=False)


def test_linear_and_transformer_mappers(toy, tmp_path):
    """prefix > 10: one Linear (predict.py); the transformer mapper (train.py's, L2-normalised input)."""
    cfg, clip, raw = GPT2Config.from_pretrained(toy["root"] / "gpt2"), toy["clip"], toy["raw"]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    torch.manual_seed(1)
    linear = published.ClipCaptionModel(12, prefix_size=clip.dim, gpt2_config=cfg).eval()
    transformer = published_transformer.ClipCaptionPrefix(
        4, clip_length=3, prefix_size=clip.dim, num_layers=2, gpt2_config=cfg,
        mapping_type=published_transformer.MappingType.Transformer).eval()
    for name, model, inputs, kind in [("linear", linear, raw, "linear"), ("transformer", transformer, unit, "transformer")]:
        save_as_published(model, tmp_path / f"{name}.pt")
        out = convert_clipcap(tmp_path / f"{name}.pt", toy["root"] / "gpt2", tmp_path / name, clip=CLIP)
        cap = load_clipcap(out, clip)
        assert cap.config["mapper"] == kind and cap.config["prefix_length"] == model.prefix_length
        prefix = cap.prefix(unit, raw)
        with torch.no_grad():
            want = model.clip_project(torch.from_numpy(inputs)).view(len(raw), model.prefix_length, -1)
        assert torch.allclose(prefix, want, atol=1e-5)
        theirs = published_log_probs(model, cap.decoder.token_rows(CAPTIONS), torch.from_numpy(inputs))
        for a, b in zip(cap.decoder.token_log_probs(CAPTIONS, prefix), theirs):
            assert np.allclose(a, b, atol=1e-5)
    with pytest.raises(BundleError, match="640"):            # the transformer mapper's default CLIP is RN50x4
        convert_clipcap(tmp_path / "transformer.pt", toy["root"] / "gpt2", tmp_path / "t2")
