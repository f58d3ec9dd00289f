"""`clipgpt bundle --published` end to end: random-init stand-ins of every published piece, in the published
layouts, served by a local Hub (HF_ENDPOINT) and a local HTTP server standing in for S3; fetched, converted and
assembled by the command; then every tab's core on the bundle, checked against the published forward passes."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.published_code import clipcap_model, standins
from clipgpt_core.models.clip import load_clip
from clipgpt_core.published.assemble import resolve_clip
from clipgpt_core.published.sources import SOURCES
from hub_server import serve_files, serve_hub

L14, B32 = SOURCES["clip-vit-l-14"].location, SOURCES["clip-vit-b-32"].location


def build_published(root: Path) -> tuple[dict, Path]:
    """-> (Hub repo id -> folder, folder of the S3 file), every piece a tiny random-init stand-in."""
    repos = {L14: root / "l14", B32: root / "b32", SOURCES["gpt2"].location: root / "gpt2",
             SOURCES["sd15"].location: root / "sd15"}
    large = standins.openai_clip(width=64, layers=2, heads=2, embed_dim=32, seed=0)
    standins.open_clip_folder(repos[L14], large)
    standins.open_clip_folder(repos[B32], standins.openai_clip(width=32, layers=1, heads=2, embed_dim=512, seed=1))
    config = standins.write_gpt2_folder(repos[SOURCES["gpt2"].location])
    for i, name in enumerate(["clipcap-coco", "clipcap-conceptual"]):
        repos[SOURCES[name].location] = root / name
        torch.manual_seed(i)
        model = clipcap_model.ClipCaptionModel(10, prefix_size=512, gpt2_config=config)
        (root / name).mkdir()
        standins.save_as_published(model, root / name / SOURCES[name].files[0])
    resolve_clip(str(repos[L14]), root / "l14-ours")
    standins.stable_diffusion_folder(repos[SOURCES["sd15"].location], load_clip(root / "l14-ours"))
    # --published draws few-step: the LCM-LoRA (its key layout, at rank 4) and TAESD
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(repos[SOURCES["sd15"].location] / "unet")
    for name in ("lcm-lora-sdv1-5", "taesd"):
        repos[SOURCES[name].location] = root / name
    standins.lcm_lora_file(root / "lcm-lora-sdv1-5" / SOURCES["lcm-lora-sdv1-5"].files[0], unet, rank=4)
    standins.taesd_folder(root / "taesd")
    standins.clip_gpt_file(root / "s3" / "clip_gpt.pt", width=64, layers=2, heads=2, seed=0)   # L14's own tower
    return repos, root / "s3"


def run_bundle(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipgpt_app", "bundle", "--published", *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    repos, s3 = build_published(root / "src")
    with serve_hub(repos) as hub, serve_files(s3) as files:
        env = dict(os.environ, HF_ENDPOINT=hub, HF_HOME=str(root / "hf"), HF_HUB_OFFLINE="0",
                   CLIPGPT_CACHE=str(root / "cache"), CLIPGPT_URL_CLIP_GPT=f"{files}/clip_gpt.pt")
        run = run_bundle(env)
        assert run.returncode == 0, run.stderr[-3000:]
        again = run_bundle(env)            # everything cached now: no download, the same bundle
        assert again.returncode == 0 and not [r for r in files.requests if r[0] == "GET"][1:]
    return {"root": root, "env": env, "bundle": root / "cache" / "published" / "bundle", "stdout": run.stdout}


def test_offline_every_missing_piece_is_named_with_its_command(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", CLIPGPT_CACHE=str(tmp_path / "c"))
    run = run_bundle(env)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    for piece in ["clip-vit-l-14", "clip-gpt", "clip-vit-b-32", "gpt2", "clipcap-coco", "clipcap-conceptual", "sd15",
                  "lcm-lora-sdv1-5", "taesd"]:
        assert f"clipgpt fetch {piece}" in run.stderr


@pytest.fixture(scope="module")
def bundle(published):
    from clipgpt_core import load_bundle
    with pytest.MonkeyPatch.context() as mp:        # the cache the command filled; this process stays offline
        mp.setenv("CLIPGPT_CACHE", published["env"]["CLIPGPT_CACHE"])
        mp.setenv("HF_HOME", published["env"]["HF_HOME"])
        b = load_bundle("published")
        b.renderer                                 # SD from the Hugging Face cache, while HF_HOME points there
    return b


def test_the_bundle_holds_every_part_with_the_clips_they_read(bundle, published):
    import json
    manifest = json.loads((published["bundle"] / "manifest.json").read_text())
    assert manifest["components"]["renderer"]["kind"] == "diffusers_hub"      # named, not copied into the bundle
    assert manifest["components"]["renderer"]["fast"] == {"lcm_lora": "lcm-lora-sdv1-5", "taesd": "taesd"}
    assert (bundle.renderer.default_steps, bundle.renderer.default_guidance) == (4, 1.0)     # few-step SD 1.5
    assert set(bundle.captioners) == {"captioner", "conceptual"}         # COCO the default, Conceptual beside it
    for cap in bundle.captioners.values():       # ClipCap reads ViT-B/32 (512-d), the bundle's CLIP is ViT-L/14
        assert cap.clip is not bundle.clip and cap.clip.dim == 512
    assert bundle.clip.dim == 32 and bundle.prior.cfg.width == 64


def test_clip_and_prior_equal_the_published_forward(bundle):
    import clip
    large = standins.openai_clip(width=64, layers=2, heads=2, embed_dim=32, seed=0)
    texts = ["a photo of a dog", "a red car"]
    with torch.no_grad():
        ref = F.normalize(large.encode_text(clip.tokenize(texts)).float(), dim=-1).numpy()
    np.testing.assert_allclose(bundle.clip.encode_texts(texts), ref, atol=1e-5)
    model = standins.clip_gpt_model(64, 2, 2, seed=0)
    tokens = bundle.prior.token_batch(texts[:1])
    with torch.no_grad():
        logp = model(F.pad(tokens, (0, 77 - tokens.shape[1])))[0, :tokens.shape[1] - 1].log_softmax(-1)
    ref = logp.gather(-1, tokens[0, 1:, None])[:, 0].numpy()
    np.testing.assert_allclose(bundle.prior.token_log_probs(texts[:1])[0], ref, atol=1e-5)


def test_explains_learned_tokens_render_through_stable_diffusion(bundle, tmp_path):
    from clipgpt_core import explain
    from clipgpt_core.models.renderer import Renderer, RenderError
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")) for _ in range(24)]
    ranked = explain(bundle, images, rng.random(24), method="inversion", budget=2, progress=False,
                     out_dir=tmp_path)
    token_file = next(e.token_file for e in ranked if e.token_file)
    tokens = bundle.renderer.load_tokens(token_file)       # CLIP-wide: SD's text encoder is that CLIP's text tower
    assert bundle.renderer.width == bundle.prior.cfg.width
    assert len(bundle.renderer.render([f"a photo of {tokens[0]}"], steps=2, seed=0)) == 1
    wide = Renderer.save_tokens(tmp_path / "b32.safetensors", {"<b32>": torch.randn(1, 512)})
    with pytest.raises(RenderError, match="512-wide embeddings.*takes 64-wide"):
        bundle.renderer.load_tokens(wide)


def test_every_tab_answers_on_the_published_bundle(bundle, tmp_path):
    from gradio_client import handle_file
    from conftest import launched_app
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype("uint8")).save(tmp_path / "im.png")
    with launched_app(bundle) as client:
        samples = client.predict(3, 0.7, 0, 1.0, "a", 0, api_name="/sample")
        assert len(samples["data"]) == 3
        best, table = client.predict(handle_file(str(tmp_path / "im.png")), 3, 0, 1.0, 0, api_name="/caption")
        assert "ClipCap" in best and table["data"]
        other, _ = client.predict(handle_file(str(tmp_path / "im.png")), 3, 0, 1.0, 0, 10, "conceptual",
                                  api_name="/caption")          # the other ClipCap, chosen by name
        assert other != best
        renders, reading, _ = client.predict("a photo of a dog", "", 2.5, 2, 0, 1, False, True, api_name="/render")
        assert len(renders) == 1
        photos = tmp_path / "photos"          # Nearest: a folder indexed with the bundle's CLIP, then searched
        photos.mkdir()
        for i in range(6):
            Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype("uint8")).save(photos / f"{i}.png")
        client.predict(str(photos), api_name="/index_folder")
        gallery, status = client.predict("a dog", None, 1.0, 3, "My folder", str(photos), "", "", "raw",
                                         api_name="/search")
        assert len(gallery) == 3, status


def test_every_explain_method_runs_on_the_real_prior(bundle):
    from clipgpt_core import explain
    rng = np.random.default_rng(2)
    images = [Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")) for _ in range(24)]
    scores = rng.random(24)
    for method in ["search", "gumbel", "rl", "inversion", "dissect"]:
        options = {"concepts": ["a dog", "a cat", "a car"]} if method == "dissect" else {}
        ranked = explain(bundle, images, scores, method=method, budget=2, progress=False, **options)
        assert ranked and all(np.isfinite(e.spearman_h) for e in ranked), method


def test_any_clip_spec_and_pieces_left_out(published, tmp_path, monkeypatch):
    """hf-hub:ORG/NAME and a local folder in the Hub's open_clip layout; a prior folder, a captioner folder, no
    renderer: what `clipgpt bundle` takes piece by piece (from the Hugging Face cache the command filled)."""
    from clipgpt_core import load_bundle
    from clipgpt_core.published.assemble import assemble
    monkeypatch.setenv("HF_HOME", published["env"]["HF_HOME"])
    b = published["bundle"]
    out = assemble(tmp_path / "b1", clip=f"hf-hub:{B32}", captioners=[str(b / "captioners" / "conceptual")])
    one = load_bundle(out)
    assert one.clip.dim == 512 and one.captioner.clip is one.clip and not one.clips    # the captioner's own CLIP
    out = assemble(tmp_path / "b2", clip=str(b / "clip"), prior=str(b / "prior"))
    two = load_bundle(out)
    assert not two.has_renderer() and two.prior.cfg.width == 64
    with pytest.raises(Exception, match="open_clip's Hub layout"):
        assemble(tmp_path / "b3", clip=str(tmp_path))
    assert not (tmp_path / "b3").exists()


def test_save_bundle_says_a_published_bundle_is_assembled_not_saved(bundle, tmp_path):
    from clipgpt_core.bundle import save_bundle
    from clipgpt_core.errors import BundleError
    with pytest.raises(BundleError, match="holds published pieces.*clipgpt bundle"):
        save_bundle(bundle, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
