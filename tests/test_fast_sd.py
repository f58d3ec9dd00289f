"""Few-step SD 1.5 (models/fast_sd): the tiny SD 1.5 stand-in made few-step with a tiny LoRA in the LCM-LoRA's key
layout and a TAESD, directly and through a bundle's manifest; the LoRA fused, learned tokens, wrong LoRAs refused."""
import json

import numpy as np
import pytest
import torch

from benchmarks.bench_published import hub_snapshot
from benchmarks.published_code import standins
from clipgpt_core.errors import ClipGPTError
from clipgpt_core.models import fast_sd
from clipgpt_core.models.renderer import Renderer, RenderError
from clipgpt_core.published.sources import SOURCES

WIDTH = 64       # the tiny CLIP's text width: SD's text encoder is that tower


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()      # tiny models: a second thread only spin-waits on a shared CPU
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    """-> {"clip": open_clip folder, "sd": SD 1.5 stand-in folder, "lora": LoRA folder, "taesd": TAESD folder,
    "hub": a Hugging Face cache holding the LoRA and TAESD under their published repo ids}."""
    from clipgpt_core.published.assemble import resolve_clip
    from clipgpt_core.models.clip import load_clip
    root = tmp_path_factory.mktemp("fast_sd")
    standins.open_clip_folder(root / "clip-src", standins.openai_clip(width=WIDTH, layers=2, heads=2, embed_dim=32))
    resolve_clip(str(root / "clip-src"), root / "clip")
    standins.stable_diffusion_folder(root / "sd", load_clip(root / "clip"))
    unet = Renderer.load(root / "sd").pipe.unet
    out = {"clip": root / "clip", "sd": root / "sd", "hub": root / "hub"}
    for key, name in (("lora", "lcm-lora-sdv1-5"), ("taesd", "taesd")):
        out[key] = hub_snapshot(root / "hub", SOURCES[name].location)       # the published pieces' layouts
    standins.lcm_lora_file(out["lora"] / fast_sd.LORA_FILE, unet, rank=4, std=0.2)
    standins.taesd_folder(out["taesd"])
    return out


@pytest.fixture
def fast(pieces):
    return fast_sd.make_fast(Renderer.load(pieces["sd"]), pieces["lora"], pieces["taesd"])


def unet_calls(renderer) -> list:
    """The batch size of each UNet call the renderer makes from now on."""
    calls = []
    renderer.pipe.unet.register_forward_hook(lambda m, args, kwargs, out: calls.append(len(args[0])),
                                            with_kwargs=True)
    return calls


def test_renders_in_4_unguided_steps_with_taesd_by_default(fast):
    from diffusers import AutoencoderTiny, LCMScheduler
    assert (fast.default_steps, fast.default_guidance) == (4, 1.0)
    assert isinstance(fast.pipe.scheduler, LCMScheduler) and isinstance(fast.pipe.vae, AutoencoderTiny)
    calls = unet_calls(fast)
    images = fast.render(["a photo of a dog"], seed=0)
    assert calls == [1] * 4 and len(images) == 1         # 4 steps, batch 1: no classifier-free guidance
    assert images[0].size == (64, 64)                              # 8x8 latents, TAESD's 8x upsampling
    again = fast.render(["a photo of a dog"], seed=0)
    assert np.array_equal(np.asarray(images[0]), np.asarray(again[0]))
    calls.clear()
    fast.render(["a photo of a dog"], seed=0, steps=2, guidance_scale=3.0)   # the caller's choice wins
    assert calls == [2, 2]


def test_the_lora_is_fused_into_the_unet_and_its_layers_dropped(pieces, fast):
    from safetensors.torch import load_file
    plain = Renderer.load(pieces["sd"]).pipe.unet
    latents, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, WIDTH)
    with torch.no_grad():
        before = plain(latents, t, encoder_hidden_states=context).sample
        after = fast.pipe.unet(latents, t, encoder_hidden_states=context).sample
    assert not torch.allclose(before, after, atol=1e-4)
    assert not any("lora" in name for name, _ in fast.pipe.unet.named_parameters())   # no LoRA layers left
    lora = load_file(pieces["lora"] / fast_sd.LORA_FILE)
    name = next(k[len("unet."):-len(".lora_A.weight")] for k in lora if k.endswith("to_q.lora_A.weight"))
    a, b = lora[f"unet.{name}.lora_A.weight"].float(), lora[f"unet.{name}.lora_B.weight"].float()
    w0, w1 = plain.get_submodule(name).weight, fast.pipe.unet.get_submodule(name).weight
    torch.testing.assert_close(w1, w0 + b @ a, rtol=1e-4, atol=1e-5)          # W + BA: alpha = rank, scale 1


def test_learned_tokens_still_load(fast, tmp_path):
    path = Renderer.save_tokens(tmp_path / "learned_embeds.safetensors", {"<concept>": torch.randn(1, WIDTH)})
    assert fast.load_tokens(path) == ["<concept>"]
    plain = np.asarray(fast.render(["a photo of a dog"], seed=0)[0])
    assert not np.array_equal(plain, np.asarray(fast.render(["a photo of a <concept>"], seed=0)[0]))


def test_a_lora_of_other_shapes_is_refused_clearly(pieces, tmp_path):
    from diffusers import UNet2DConditionModel
    other = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=4,
                                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=WIDTH)
    wrong = standins.lcm_lora_file(tmp_path / "wrong" / fast_sd.LORA_FILE, other, rank=4)
    renderer = Renderer.load(pieces["sd"])
    with pytest.raises(RenderError, match=r"does not fit this renderer's UNet: .*for a (Linear|Conv2d) of") as e:
        fast_sd.make_fast(renderer, wrong.parent, pieces["taesd"])
    assert isinstance(e.value, ClipGPTError) and "lcm-lora-sdv1-5" in str(e.value)
    from safetensors.torch import save_file
    save_file({"unet.no_such.block.lora_A.weight": torch.zeros(4, 8), "unet.no_such.block.lora_B.weight":
               torch.zeros(8, 4)}, tmp_path / "absent.safetensors")
    with pytest.raises(RenderError, match="no_such.block: no such module"):
        fast_sd.fuse_lora(renderer.pipe, tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(RenderError, match="not a LoRA file diffusers can read"):
        fast_sd.fuse_lora(renderer.pipe, tmp_path / "junk.safetensors")
    with pytest.raises(RenderError, match="No TAESD at"):
        fast_sd.use_taesd(renderer.pipe, tmp_path)
    assert renderer.default_steps != 4                  # nothing half-applied to the defaults


def test_a_bundle_named_fast_fetches_the_pieces_and_draws_few_step(pieces, tmp_path, monkeypatch):
    from clipgpt_core import load_bundle
    from clipgpt_core.published import assemble
    monkeypatch.setenv("HF_HUB_CACHE", str(pieces["hub"]))          # the pieces under their published repo ids
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assemble.main(["--clip", str(pieces["clip"]), "--renderer", str(pieces["sd"]), "--fast", "--out",
                   str(tmp_path / "b")])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["components"]["renderer"]["fast"] == {"lcm_lora": "lcm-lora-sdv1-5", "taesd": "taesd"}
    assert fast_sd.defaults(manifest) == (4, 1.0)             # what the Render tab lays its sliders out with
    renderer = load_bundle(tmp_path / "b").renderer
    assert (renderer.default_steps, renderer.default_guidance) == (4, 1.0)
    assert renderer.fast["lcm_lora"].startswith(str(pieces["hub"]))
    calls = unet_calls(renderer)
    renderer.render(["a photo of a dog"], seed=0)
    assert calls == [1] * 4
    hub = assemble.renderer_entry("sd15", tmp_path, fast=True)             # the Hub renderer's entry: named
    assert hub["kind"] == "diffusers_hub" and hub["fast"] == fast_sd.PUBLISHED
    assert "fast" not in assemble.renderer_entry("sd15", tmp_path)
    with pytest.raises(SystemExit, match="give --renderer too"):
        assemble.main(["--clip", str(pieces["clip"]), "--fast", "--out", str(tmp_path / "c")])
