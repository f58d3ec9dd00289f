"""Bundles: the built-in one loads offline; save/load round trip; pretrained specs."""
import time

import numpy as np
import pytest
from PIL import Image

from clipgpt_core import BundleError, WeightsNotAvailable, create_clip, load_bundle, save_bundle, world
from clipgpt_core.bundle import Bundle


def test_builtin_bundle_api():
    b = load_bundle()
    images = [world.example(s).image for s in range(3)]
    img = b.clip.encode_images(images)
    txt = b.clip.encode_texts(["a red circle", "two blue stars on a white background"])
    for e, n in ((img, 3), (txt, 2)):
        assert e.shape == (n, b.clip.dim) and e.dtype == np.float32
        assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_round_trip(tmp_path):
    clip = create_clip("shapes-clip")
    b = Bundle("tiny", clip, gallery={"kind": "shapesworld", "size": 10, "seed": 0})
    save_bundle(b, tmp_path / "tiny")
    assert (tmp_path / "tiny" / "clip" / "open_clip_model.safetensors").exists()
    loaded = load_bundle(tmp_path / "tiny")
    assert loaded.name == "tiny" and loaded.gallery == b.gallery
    texts = ["a small green star in the top left"]
    image = [world.example(1).image]
    assert np.allclose(loaded.clip.encode_texts(texts), clip.encode_texts(texts), atol=1e-6)
    assert np.allclose(loaded.clip.encode_images(image), clip.encode_images(image), atol=1e-6)


def test_empty_text_is_refused():
    b = load_bundle()
    with pytest.raises(ValueError, match="Empty text"):
        b.clip.encode_texts(["   "])
    with pytest.raises(TypeError):
        b.clip.encode_texts("a red circle")
    very_long = "a red circle " * 500   # truncated to the context, not an error
    assert b.clip.encode_texts([very_long]).shape == (1, b.clip.dim)


def test_pretrained_architecture_at_random_init():
    """The pretrained code path (open_clip ViT-B-32) without a download."""
    b = load_bundle("open_clip:ViT-B-32/random-init")
    assert b.clip.dim == 512
    e = b.clip.encode_images([Image.new("RGB", (300, 200), "red")])
    t = b.clip.encode_texts(["a photo of a dog"])
    assert e.shape == (1, 512) and t.shape == (1, 512)


@pytest.mark.parametrize("spec", ["shapes", "open_clip:ViT-B-32/random-init"])
def test_text_encodes_trimmed_to_the_longest_text_are_open_clips(spec):
    """encode_texts runs the text tower only up to the longest text's end; open_clip runs the whole context."""
    import torch
    import torch.nn.functional as F
    clip = load_bundle(spec).clip
    texts = ["a red star", "two small blue circles and a large green square in the top left on a white background",
             "a"]
    with torch.no_grad():
        ref = F.normalize(clip.model.encode_text(clip.tokenizer(clip.clean_texts(texts))).float(), dim=-1).numpy()
    ours = clip._encode_texts(clip.clean_texts(texts))
    assert np.abs(ours - ref).max() < 1e-5


def test_missing_pretrained_weights_fail_fast_and_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t0 = time.time()
    with pytest.raises(WeightsNotAvailable, match="huggingface-cli download laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        from clipgpt_core.models.clip import require_cached_weights
        require_cached_weights("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    with pytest.raises(WeightsNotAvailable):
        load_bundle("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert time.time() - t0 < 10


@pytest.mark.parametrize("spec, message", [
    ("/no/such/bundle", "No bundle"),
    ("open_clip:NoSuchNet/x", "no architecture"),
    ("open_clip:ViT-B-32", "Name the weights"),
    ("open_clip:ViT-B-32/not-a-tag", "no pretrained tag"),
])
def test_bad_bundle_specs(spec, message):
    with pytest.raises((BundleError, WeightsNotAvailable), match=message):
        load_bundle(spec)


def test_mixed_bundle_is_refused_and_names_the_retrain_command(tmp_path):
    """Every component records the fingerprints of what it was trained against; a bundle whose CLIP
    was swapped under its CLIP-GPT (the captioner) and embedding prior is refused (strict) or loaded without them."""
    import shutil
    shutil.copytree(load_bundle().path, tmp_path / "mixed", ignore=shutil.ignore_patterns("renderer", "classifier"))
    manifest = (tmp_path / "mixed" / "manifest.json")
    manifest.write_text(manifest.read_text().replace('"renderer"', '"renderer_unused"'))
    other = create_clip("shapes-clip")            # random weights: a different image side and text tower
    other.save(tmp_path / "mixed" / "clip")
    with pytest.raises(BundleError, match=r"python -m clipgpt_train.bundle --out .*mixed") as e:
        load_bundle(tmp_path / "mixed")
    for name in ("clip_gpt was trained against clip", "embedding_prior", "prior was trained against clip_text"):
        assert name in str(e.value)
    partial = load_bundle(tmp_path / "mixed", strict=False)
    assert partial.embedding_prior is None and partial.clip_gpt is None and partial.captioner.mapper is None


def test_saved_bundle_records_what_it_was_trained_against(tmp_path):
    import json
    b = load_bundle()
    save_bundle(b, tmp_path / "copy")
    record = json.loads((tmp_path / "copy" / "clip_gpt" / "trained_against.json").read_text())
    assert record["clip"] == b.clip.fingerprint() and set(record) == {"clip", "prior"}
    assert not (tmp_path / "copy" / "captioner").exists()          # CLIP-GPT is the captioner: not saved twice
    copy = load_bundle(tmp_path / "copy")
    assert copy.captioner is copy.clip_gpt.captioner and copy.captioner.mapper is not None
    # the ranking CLIP is kept, and ranks the copy's captions too
    assert copy.ranking_clip.fingerprint() == b.ranking_clip.fingerprint()
    assert copy.captioner.ranking_clips == [copy.ranking_clip]
