"""unCLIP's decoder (issue 40): a tiny random UNet with the built-in decoder's conditioning, through the pipeline,
clipgpt_core.models.decoder and Renderer.decode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

DIM = 8


@pytest.fixture(scope="module")
def pipe():
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from clipgpt_core.models.unclip_pipeline import UnclipDecoderPipeline
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=(1, 1), norm_num_groups=4,
        encoder_hid_dim_type="image_proj", encoder_hid_dim=DIM, addition_embed_type="image")
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=16)
    scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                            timestep_spacing="trailing")
    p = UnclipDecoderPipeline(vae=vae, unet=unet, scheduler=scheduler)
    p.set_progress_bar_config(disable=True)
    return p


def vectors(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def test_decode_runs_and_is_seeded(pipe):
    from clipgpt_core.models.decoder import decode
    images = decode(pipe, vectors(2), num_images=2, seed=3, steps=3)
    assert len(images) == 4 and images[0].size == (16, 16) and images[0].mode == "RGB"
    again = decode(pipe, vectors(2), num_images=2, seed=3, steps=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    other = decode(pipe, vectors(2), num_images=2, seed=4, steps=3)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(other[0]))


def test_guidance_off_and_on(pipe):
    from clipgpt_core.models.decoder import decode
    off = decode(pipe, vectors(1), seed=0, guidance_scale=1.0, steps=3)
    on = decode(pipe, vectors(1), seed=0, guidance_scale=5.0, steps=3)
    assert len(off) == len(on) == 1
    assert not np.array_equal(np.asarray(off[0]), np.asarray(on[0]))


def test_vectors_are_normalised(pipe):
    from clipgpt_core.models.decoder import decode
    v = vectors(1)
    a = decode(pipe, v, seed=1, steps=2)[0]
    b = decode(pipe, 7 * v[0], seed=1, steps=2)[0]          # one vector, (d,), scaled: the same direction
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, DIM)), "all zeros"),
    (np.ones((1, DIM + 1)), f"(n, {DIM})"),
    (np.ones((1, 2, DIM)), f"(n, {DIM})"),
    (np.full((1, DIM), np.nan), "NaN"),
    ("a red star", "numbers"),
])
def test_bad_vectors(pipe, bad, message):
    from clipgpt_core.models.decoder import decode
    from clipgpt_core.models.renderer import RenderError
    with pytest.raises(RenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode(pipe, bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_images": 0}, "number of images"), ({"steps": 0}, "steps"), ({"guidance_scale": -1}, "guidance"),
    ({"seed": -1}, "seed"), ({"num_images": 16, "n": 5}, "more than"),
])
def test_bad_options(pipe, kwargs, message):
    from clipgpt_core.models.decoder import decode
    from clipgpt_core.models.renderer import RenderError
    n = kwargs.pop("n", 1)
    with pytest.raises(RenderError, match=message):
        decode(pipe, vectors(n), **kwargs)


def test_pipeline_check_inputs(pipe):
    with pytest.raises(ValueError, match="image_embeds must be"):
        pipe(torch.ones(2, DIM + 1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        pipe(np.ones((1, DIM)))


def test_renderer_decode_loads_the_decoder_beside_it(pipe, tmp_path):
    from clipgpt_core.models.decoder import decode
    from clipgpt_core.models.renderer import Renderer, RenderError
    renderer = Renderer(None, source=str(tmp_path / "renderer"))
    with pytest.raises(RenderError, match="No unCLIP decoder"):
        renderer.decode(vectors(1))
    pipe.save_pretrained(tmp_path / "decoder")
    got = renderer.decode(vectors(1), seed=2, steps=2)
    want = decode(pipe, vectors(1), seed=2, steps=2)
    assert np.array_equal(np.asarray(got[0]), np.asarray(want[0]))
