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
        renderer.decode(vectors(1), method="unclip")
    pipe.save_pretrained(tmp_path / "decoder")
    got = renderer.decode(vectors(1), seed=2, steps=2, method="unclip")
    want = decode(pipe, vectors(1), seed=2, steps=2)
    assert np.array_equal(np.asarray(got[0]), np.asarray(want[0]))


# ----------------------------------------------------------------------------- the layout head (method="layout")
def _scenes():
    from clipgpt_core.world import scenes as world
    rng = __import__("random").Random(0)
    return [world.sample_scene(rng, n_objects=k) for k in (1, 2, 3, 4)]


def _one_hot_outputs(targets, cfg):
    """The outputs a perfect head gives: logits one-hot on the targets."""
    big = lambda y, n: torch.nn.functional.one_hot(y.clamp(min=0), n).float() * 20   # noqa: E731
    return {"occupied": big(targets["occupied"], 2), "colour": big(targets["colour"], len(cfg.colours)),
            "shape": big(targets["shape"], len(cfg.shapes)), "size": big(targets["size"], len(cfg.sizes)),
            "offset": targets["offset"], "background": big(targets["background"], len(cfg.backgrounds))}


def test_layout_head_targets_round_trip_to_scenes():
    from clipgpt_core.models.layout_head import LayoutHeadConfig, scene_targets, scenes_from
    from clipgpt_core.world import scenes as world
    cfg = LayoutHeadConfig()
    assert cfg.colours == list(world.COLOURS) and cfg.positions == list(world.POSITIONS)
    scenes = [s for s in _scenes() if len({o.position for o in s.objects}) == len(s.objects)]
    back = scenes_from(_one_hot_outputs(scene_targets(scenes, cfg), cfg), cfg)
    for s, b in zip(scenes, back):
        assert b.background == s.background
        key = lambda o: (o.position, o.colour, o.shape, o.size)   # noqa: E731
        assert sorted(map(key, b.objects)) == sorted(map(key, s.objects))
        for o in s.objects:                     # the centre where it was (offsets clipped to the cell only)
            p = next(q for q in b.objects if q.position == o.position)
            assert abs(p.cx - o.cx) < 1e-3 and abs(p.cy - o.cy) < 1e-3


def test_layout_head_saves_loads_and_predicts(tmp_path):
    from clipgpt_core.models.layout_head import LayoutHead, LayoutHeadConfig, LayoutHeadNet
    from clipgpt_core.world import scenes as world
    torch.manual_seed(0)
    head = LayoutHead(LayoutHeadNet(LayoutHeadConfig(dim=DIM, hidden=16, layers=1)))
    head.save(tmp_path / "lh")
    again = LayoutHead.load(tmp_path / "lh")
    a, b = head.predict(vectors(3)), again.predict(vectors(3))
    assert a == b and len(a) == 3
    for s in a:                                  # always a drawable scene: >= 1 object, never the background's colour
        assert s.background in world.BACKGROUNDS and s.objects
        assert all(o.colour != s.background and o.shape in world.SHAPES for o in s.objects)


class _FakeClip:
    """Image -> a fixed random projection of its pixels: a stand-in for the bundle's CLIP."""
    dim, model_name = DIM, "fake"

    def encode_images(self, images):
        x = np.stack([np.asarray(im.resize((8, 8)), np.float32).ravel() / 255 for im in images])
        w = np.random.default_rng(0).normal(size=(x.shape[1], DIM)).astype(np.float32)
        v = x @ w
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_layout_head_trainer_resumes_to_the_same_weights(tmp_path):
    from clipgpt_train.layout_head import LayoutHeadTrainConfig, train
    kw = dict(n_scenes=48, n_val=16, steps=6, batch=8, hidden=16, layers=1, warmup=1)
    whole = train(LayoutHeadTrainConfig(out=str(tmp_path / "a"), checkpoint=str(tmp_path / "ca"), **kw),
                  clip=_FakeClip(), progress=False)
    train(LayoutHeadTrainConfig(out=str(tmp_path / "b"), checkpoint=str(tmp_path / "cb"), stop_after=3, **kw),
          clip=_FakeClip(), progress=False)
    resumed = train(LayoutHeadTrainConfig(out=str(tmp_path / "b"), checkpoint=str(tmp_path / "cb"), **kw),
                    clip=_FakeClip(), progress=False)
    for p, q in zip(whole.net.parameters(), resumed.net.parameters()):
        assert torch.equal(p, q)
    assert (tmp_path / "b" / "layout_head_config.json").is_file()


def test_decode_layout_draws_the_predicted_scene(tmp_path):
    """Renderer.decode(method="layout"): the head's scene is what reaches the layout UNet, with no caption
    (text="none") or the scene's own (text="caption"); num_images repeat the scene."""
    from types import SimpleNamespace
    from PIL import Image
    from clipgpt_core.models import planner
    from clipgpt_core.models.decoder import scene_caption
    from clipgpt_core.models.layout_head import LayoutHead, LayoutHeadConfig, LayoutHeadNet
    from clipgpt_core.models.renderer import Renderer, RenderError
    seen = {}

    def pipe(prompt, layout, **kw):
        seen.update(prompt=prompt, layout=layout)
        return SimpleNamespace(images=[Image.new("RGB", (64, 64)) for _ in prompt])
    pipe.unet = SimpleNamespace(config=SimpleNamespace(sample_size=32, in_channels=4 + planner.LAYOUT_CHANNELS))
    pipe.vae = SimpleNamespace(config=SimpleNamespace(latent_channels=4))
    pipe.layout_channels, pipe.device = planner.LAYOUT_CHANNELS, "cpu"
    renderer = Renderer(pipe, source=str(tmp_path / "renderer"))
    with pytest.raises(RenderError, match="No layout head"):
        renderer.decode(vectors(1), method="layout")
    torch.manual_seed(0)
    renderer.layout_head = head = LayoutHead(LayoutHeadNet(LayoutHeadConfig(dim=DIM, hidden=16, layers=1)))
    from clipgpt_core.models.decoder import check_vectors
    scenes = head.predict(check_vectors(vectors(2), DIM))     # decode normalises first, so the same floats
    assert all(1 <= len(s.objects) <= 4 for s in scenes)
    images = renderer.decode(vectors(2), num_images=2, method="layout", text="none", steps=2)
    assert len(images) == 4 and set(seen["prompt"]) == {""}
    want = planner.layout_map([s for s in scenes for _ in range(2)], 32)
    assert np.array_equal(seen["layout"][:4].numpy(), want)
    renderer.decode(vectors(2), method="layout", text="caption", steps=2)
    assert seen["prompt"][:2] == [scene_caption(s) for s in scenes]
    assert planner.read_prompt(seen["prompt"][0]).description is not None
    with pytest.raises(RenderError, match="method"):
        renderer.decode(vectors(1), method="dalle")


def test_refine_only_moves_nearer_the_vector():
    """Analysis by synthesis: the refined scene's rendering is at least as near the target vector as the head's."""
    import random
    from clipgpt_core.models.layout_head import LayoutHead, LayoutHeadConfig, LayoutHeadNet, refine, scenes_from
    from clipgpt_core.world import scenes as world
    torch.manual_seed(0)
    head = LayoutHead(LayoutHeadNet(LayoutHeadConfig(dim=DIM, hidden=16, layers=1)))
    clip = _FakeClip()
    target = _scenes()[1]
    v = clip.encode_images([world.render(target, random.Random(1))])
    out = head.outputs(v)
    start = scenes_from(out, head.cfg)
    got = refine(start, v, out, clip, head.cfg, rounds=2)
    cos = lambda s: float(clip.encode_images([world.render(s, random.Random(0))])[0] @ v[0])   # noqa: E731
    assert len(got) == 1 and 1 <= len(got[0].objects) <= 4
    assert cos(got[0]) >= cos(start[0])
    assert head.predict(v, clip=clip, rounds=2) == got


def test_slerp_and_text_diff_move_along_the_sphere():
    from clipgpt_core.models.decoder import RenderError, slerp, text_diff
    a, b = np.eye(DIM, dtype=np.float32)[:2]
    path = slerp(a, b, np.linspace(0, 1, 5))
    assert np.allclose(path[0], a, atol=1e-6) and np.allclose(path[-1], b, atol=1e-6)
    assert np.allclose(np.linalg.norm(path, axis=1), 1, atol=1e-6)
    assert np.allclose(path[2], (a + b) / np.sqrt(2), atol=1e-6)           # halfway along the arc
    steps = np.arccos(np.clip((path[:-1] * path[1:]).sum(1), -1, 1))
    assert np.allclose(steps, np.pi / 8, atol=1e-5)                         # even steps of angle
    z = text_diff(a, b, -b, [0.0, 0.5])            # towards normalize(-b - b) = -b
    assert np.allclose(z[0], a) and z[1] @ -b > 0.6
    with pytest.raises(RenderError, match="same CLIP vector"):
        text_diff(a, b, b, [0.5])


def test_interpolation_and_text_diffs_fix_the_noise(pipe):
    from clipgpt_core.models.renderer import RenderError, Renderer

    class Clip:      # the bundle's CLIP, as the renderer reaches it through its captioner
        @staticmethod
        def encode_texts(texts):
            return np.stack([np.eye(DIM, dtype=np.float32)[len(t) % DIM] for t in texts])

    class Captioner:
        clip = Clip()
    r = Renderer(None, captioner=Captioner())
    r.decoder = pipe
    a, b = vectors(2)
    strip = r.interpolate(a, b, frames=3, seed=1, method="unclip", steps=2)
    same = r.decode(a[None], 1, 1, method="unclip", steps=2)[0]
    assert len(strip) == 3 and np.array_equal(np.asarray(strip[0]), np.asarray(same))   # frame 0 is A, same noise
    diffs = r.text_diff(a, "a red star", "a blue cross", thetas=(0.0, 0.5), seed=1, method="unclip", steps=2)
    assert np.array_equal(np.asarray(diffs[0]), np.asarray(same))                         # theta 0: the image itself
    with pytest.raises(RenderError, match="frames must be"):
        r.interpolate(a, b, frames=40)
    with pytest.raises(RenderError, match="both texts"):
        r.text_diff(a, "a red star", " ")


def test_sampling_via_the_prior_needs_one_and_a_prompt_list():
    from clipgpt_core.models.renderer import RenderError, Renderer
    with pytest.raises(RenderError, match="caption->CLIP prior"):
        Renderer(None).sample_via_prior(["a red star"])
    with pytest.raises(TypeError, match="list of prompts"):
        Renderer(None).sample_via_prior("a red star")
