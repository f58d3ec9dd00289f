"""Render v4: the planner (prompt -> reading -> scene -> layout map), LayoutDiffusionPipeline, stage 3 of the
renderer's training, the model-free scene judge, and the shipped renderer judged by it."""
import random

import numpy as np
import pytest
import torch

from benchmarks import alt_render
from benchmarks.scene_judge import detect, judge_prompt
from clipgpt_core import world
from clipgpt_core.world.captions import parse_caption
from clipgpt_core.models.planner import (LAYOUT_CHANNELS, draw_plan, layout_map, plan_layout, plan_prompts,
                                         scene_for, read_prompt)


# ----------------------------------------------------------------------------- reading
def test_a_caption_of_the_world_reads_exactly():
    r = read_prompt("a red star left of a blue circle on a black background")
    assert r.exact and not r.unknown
    assert r.description == parse_caption("a red star left of a blue circle on a black background")


def test_unknown_words_are_reported_and_the_rest_is_still_read():
    r = read_prompt("a big fluffy red star next to two blue circles, please")
    assert not r.exact and set(r.unknown) == {"big", "fluffy", "next", "to", "please"}
    kinds = sorted((p.colour, p.shape) for p in r.description.phrases)
    assert kinds == [("blue", "circle"), ("blue", "circle"), ("red", "star")]
    assert "not understood: big, fluffy" in r.summary()
    nothing = read_prompt("a photo of a dog")
    assert nothing.description is None and "dog" in nothing.unknown and "text alone" in nothing.summary()
    negated = read_prompt("a diamond or a triangle but not a square")     # an explanation's logic, as drawn
    assert sorted(p.shape for p in negated.description.phrases) == ["diamond", "triangle"]
    assert negated.negated == ("not a square",) and "left out: not a square" in negated.summary()
    token = read_prompt("a <concept> on a black background")
    assert token.description is None and token.unknown == ("<concept>",)


def test_a_relation_and_a_count_read_outside_the_grammar():
    r = read_prompt("Grey background: a small green cross, above, a purple square!")
    assert r.description is not None and r.description.relation == "above"
    c = read_prompt("three yellow circles, nicely drawn")
    assert c.description.count == 3 and c.description.phrases[0] == world.Phrase("circle", "yellow")


def test_an_object_whose_shape_is_not_said_gets_one_drawn_per_image():
    """Explain's answers read "red" or "a large object in the top left"; the render check draws them."""
    assert read_prompt("red").summary() == "read as: a red object"
    plans = plan_prompts(["red", "a large object in the top left", "two blue things"], 12, seed=0)
    red, corner, blue = plans[:12], plans[12:24], plans[24:]
    assert all(len(p.scene.objects) == 1 and p.scene.objects[0].colour == "red" for p in red)
    assert len({p.scene.objects[0].shape for p in red}) >= 3                  # the shape is drawn, not fixed
    assert all((o.size, o.position) == ("large", "top left") for p in corner for o in p.scene.objects)
    assert all(len(p.scene.objects) == 2 and {o.colour for o in p.scene.objects} == {"blue"} for p in blue)
    assert read_prompt("a photo of a dog").description is None               # no attribute of the world: text only


def test_a_reading_is_completed_with_every_unstated_background_and_size():
    from clipgpt_core.models.planner import completions
    options = completions("a red star left of a blue circle")
    assert len(options) == 3 * 2 * 2 and all(parse_caption(o).background for o in options)
    assert completions("three small circles on a black background") == ["three small circles on a black background"]
    assert completions("not a caption") == ["not a caption"]


# ----------------------------------------------------------------------------- planning
def test_every_plan_is_true_of_its_prompt_and_the_unstated_varies():
    rng = random.Random(0)
    for split in ("train", "heldout"):
        for _ in range(150):
            scene = world.sample_scene(rng, split=split)
            d = world.describe(scene, rng)
            planned = scene_for(d, rng)
            assert planned is not None and world.is_true(d, planned), world.caption_text(d)
    plans = plan_prompts(["a red star"], 8, seed=3)
    assert len({(p.scene.background, p.scene.objects[0].size, p.scene.objects[0].position) for p in plans}) > 3
    assert [p.scene for p in plans] == [p.scene for p in plan_prompts(["a red star"], 8, seed=3)]   # seeded


def test_what_cannot_be_placed_is_let_go_and_said():
    plan = plan_layout(read_prompt("four large squares"), random.Random(0))
    assert plan.scene is not None and len(plan.scene.objects) == 4 and "sizes" in plan.note
    plan = plan_layout(read_prompt("a large red circle in the top left and a large blue square in the top left"),
                       random.Random(0))
    assert plan.scene is not None and "positions" in plan.note
    varied = plan_layout(read_prompt("a red star in the top left"), random.Random(0), vary_layout=True)
    assert varied.scene.objects[0].shape == "star"


def test_the_layout_map_binds_colour_and_shape_by_place():
    scene = world.Scene("black", (world.Obj("red", "star", "large", 16, 16, 24, 0),
                                  world.Obj("blue", "circle", "small", 48, 48, 12, 0)))
    m = layout_map([scene, None])                                         # (2, 20, 32, 32)
    assert m.shape == (2, LAYOUT_CHANNELS, 32, 32) and not m[1].any()
    red, blue = list(world.COLOURS).index("red"), list(world.COLOURS).index("blue")
    star, circle = 8 + world.SHAPES.index("star"), 8 + world.SHAPES.index("circle")
    assert m[0, red, 8, 8] == 1 and m[0, star, 8, 8] == 1 and m[0, blue, 8, 8] == 0
    assert m[0, blue, 24, 24] == 1 and m[0, circle, 24, 24] == 1 and m[0, red, 24, 24] == 0
    assert m[0, 14 + list(world.BACKGROUNDS).index("black")].min() == 1
    u, v = m[0, 17], m[0, 18]                                              # where in its box each cell lies
    assert u[8, 2] < -0.8 and u[8, 13] > 0.8 and v[2, 8] < -0.8 and v[13, 8] > 0.8 and u[0, 0] == 0
    mask = m[0, 19]                                                        # the silhouettes
    assert mask[24, 24] == 1 and mask[0, 0] == 0 and mask.max() <= 1
    star_box = m[0, star].sum()
    assert 0.3 * star_box < mask[:16, :16].sum() < 0.6 * star_box          # a star covers about half its box
    outside = mask * (m[0, star] + m[0, circle] == 0)                      # the star sits 0.1 of its box low
    assert outside.sum() < 0.05 * mask.sum()                                # so it lies (nearly) inside its box
    assert layout_map([scene], channels=19).shape == (1, 19, 32, 32)        # without silhouettes
    assert layout_map([scene], channels=17).shape == (1, 17, 32, 32)        # without coordinates either
    picture = draw_plan(plan_layout(read_prompt("a red star left of a blue circle"), random.Random(0)))
    assert picture.size == (256, 256)


# ----------------------------------------------------------------------------- the judge
def test_the_scene_judge_reads_independent_renders():
    rng = random.Random(1)
    hits = []
    for _ in range(40):
        scene = world.sample_scene(rng, split="any")
        d = world.describe(scene, rng)
        verdict = judge_prompt(d, alt_render.render(scene, rng, antialias=True))
        hits.append((verdict["binding"], verdict["extra"], verdict["n_objects"] == len(scene.objects)))
    assert np.mean([h[0] for h in hits]) >= 0.95 and np.mean([h[1] for h in hits]) <= 0.05
    assert np.mean([h[2] for h in hits]) >= 0.95
    blank = world.render(world.Scene("gray", ()))
    assert detect(blank) == ("gray", [])


def test_the_judge_fails_a_swapped_binding():
    d = parse_caption("a red star and a blue circle on a gray background")
    swapped = world.Scene("gray", (world.Obj("blue", "star", "large", 18, 18, 24, 0),
                                   world.Obj("red", "circle", "large", 46, 46, 24, 0)))
    verdict = judge_prompt(d, world.render(swapped))
    assert verdict["present"] and not verdict["binding"] and not verdict["caption_true"]


# ----------------------------------------------------------------------------- the detail pass
def test_the_detail_pass_redraws_each_small_object_in_its_place():
    """A scene drawn with its small star as a blob, and the star's detail image (a large star alone): the paste
    puts a star where the blob was, at the small size, and leaves every pixel outside the star's disk as it was."""
    from clipgpt_core.models.detail_pass import detail_crops, paste_details
    star = world.Obj("yellow", "star", "small", 18, 20, 12, 0)
    circle = world.Obj("red", "circle", "large", 44, 42, 24, 0)
    scene = world.Scene("gray", (star, circle))
    blob = world.render(world.Scene("gray", (world.Obj("yellow", "circle", "small", 18, 20, 12, 0), circle)))
    crops = detail_crops([scene, None, world.Scene("black", (circle,))])
    assert [(c.index, c.obj) for c in crops] == [(0, star)]                      # small objects only
    (c,) = crops
    assert c.text == "a large yellow star on a gray background" and c.scene.objects[0].size == "large"
    d = parse_caption("a small yellow star and a large red circle on a gray background")
    assert not judge_prompt(d, blob)["binding"]
    (pasted,) = paste_details([blob], crops, [world.render(c.scene)])
    verdict = judge_prompt(d, pasted)
    assert verdict["binding"] and verdict["n_objects"] == 2 and verdict["background"], verdict
    _, objects = detect(pasted)
    small = [o for o in objects if o.colour == "yellow"][0]
    assert abs(small.cx - 18) <= 1.5 and abs(small.cy - 20) <= 1.5 and small.size == "small"
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    outside = np.hypot(xx - 18, yy - 20) > 12 * 0.72 + 2
    assert np.array_equal(np.asarray(pasted)[outside], np.asarray(blob)[outside])


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def tiny_layout_dir(bundle, tmp_path_factory):
    """A tiny renderer trained through all three stages (a few steps each), saved as the command saves it."""
    from test_renderer import tiny_config

    from clipgpt_train.renderer import train
    out = tmp_path_factory.mktemp("layout_renderer")
    torch.set_num_threads(1)
    train(tiny_config(out, steps_layout=2, n_layout_latents=16), clip=bundle.clip, progress=False)
    return out


def test_stage_three_saves_a_layout_pipeline_that_round_trips(tiny_layout_dir):
    import json

    from clipgpt_core.models.layout_pipeline import LayoutDiffusionPipeline
    from clipgpt_core.models.renderer import Renderer
    assert json.loads((tiny_layout_dir / "model_index.json").read_text())["_class_name"] == "LayoutDiffusionPipeline"
    r = Renderer.load(tiny_layout_dir)
    assert isinstance(r.pipe, LayoutDiffusionPipeline) and r.reads_layout
    assert r.pipe.unet.config.in_channels == 4 + LAYOUT_CHANNELS
    r.pipe.set_progress_bar_config(disable=True)
    a, plans = r.render_with_plans(["a red star left of a blue circle"], num_images=2, steps=2, seed=0)
    b = r.render(["a red star left of a blue circle"], num_images=2, steps=2, seed=0)
    assert [np.asarray(x).tolist() for x in a] == [np.asarray(x).tolist() for x in b]     # seeded
    assert len(plans) == 2 and all(p.scene and len(p.scene.objects) == 2 for p in plans)
    # the map is read: the same noise under another layout gives other pixels
    other = r.draw(plan_prompts(["four small white squares"], 2, 0), steps=2, seed=0)
    assert not np.array_equal(np.asarray(a[0]), np.asarray(other[0]))
    with pytest.raises(ValueError, match="layout must be"):
        r.pipe(["a red star"], layout=torch.zeros(1, 3, 8, 8), num_inference_steps=1)
    from clipgpt_core.models.renderer import RenderError
    with pytest.raises(RenderError, match="caption->CLIP prior"):        # a pipeline alone reads no embeddings
        r.render(["a red star"], via_prior=True)
    with pytest.raises(RenderError, match="captioner"):
        r.variations([world.example(0).image])
    with pytest.raises(RenderError, match="No images"):
        r.variations([])


def test_the_detail_pass_draws_in_the_same_batch(tiny_layout_dir):
    """detail=True: one denoising loop over the scenes and their small objects' detail images; off, the
    scenes alone. Seeded either way, and different where there is a small object to redraw."""
    from clipgpt_core.models.renderer import Renderer
    r = Renderer.load(tiny_layout_dir)
    r.pipe.set_progress_bar_config(disable=True)
    batches, call = [], r.pipe.__call__
    r.pipe.__class__ = type("Spy", (r.pipe.__class__,), {"__call__": lambda self, prompt, **kw:
                                                          batches.append(len(prompt)) or call(prompt, **kw)})
    prompt = ["two small red stars and a large blue circle"]
    on = r.render(prompt, num_images=2, steps=2, seed=3)
    assert batches == [2 + 4]
    assert [np.asarray(x).tolist() for x in on] == [np.asarray(x).tolist() for x in r.render(prompt, num_images=2,
                                                                                             steps=2, seed=3)]
    off = r.render(prompt, num_images=2, steps=2, seed=3, detail=False)
    assert batches[-1] == 2 and not np.array_equal(np.asarray(on[0]), np.asarray(off[0]))
    r.render(["a large red star"], steps=2, seed=3)
    assert batches[-1] == 1                                                   # nothing small: nothing extra


def test_the_layout_unet_starts_as_the_text_unet(bundle):
    """Stage 3's zero-initialised map channels: with any map, the new UNet predicts exactly what stage 2's did."""
    from test_renderer import tiny_config

    from clipgpt_train.renderer import make_unet, with_layout_input
    cfg = tiny_config("unused")
    text_unet = make_unet(cfg, 128, 16).eval()
    layout_unet = with_layout_input(text_unet, LAYOUT_CHANNELS).eval()
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 32, 128)
    maps = torch.rand(2, LAYOUT_CHANNELS, 16, 16)
    with torch.no_grad():
        assert torch.allclose(text_unet(x, t, text).sample, layout_unet(torch.cat([x, maps], 1), t, text).sample,
                              atol=1e-5)
    from clipgpt_core.errors import InputError
    with pytest.raises(InputError, match="already takes"):
        with_layout_input(layout_unet, LAYOUT_CHANNELS)


# ----------------------------------------------------------------------------- the shipped renderer
@pytest.fixture(scope="module")
def shipped():
    from clipgpt_core import load_bundle
    b = load_bundle()           # a fresh one: other tests load learned tokens into the shared bundle's renderer
    b.renderer.pipe.set_progress_bar_config(disable=True)
    return b.renderer


def test_the_shipped_renderer_binds_places_and_counts(shipped):
    """Judged by the model-free scene judge: both objects in their own colour and shape, the relation, the count."""
    cases = ["a large red star and a large blue circle on a black background", "a green triangle left of a purple square",
             "three small yellow circles on a gray background", "a white diamond above an orange cross"]
    verdicts = [judge_prompt(parse_caption(c), im) for c in cases for im in shipped.render([c], num_images=2, seed=0)]
    assert np.mean([v["binding"] for v in verdicts]) >= 0.75, verdicts
    assert np.mean([v.get("relation", v.get("count", True)) for v in verdicts[2:]]) >= 0.5, verdicts


def test_images_as_prompts_keep_the_objects(shipped):
    rng = random.Random(2)
    d = parse_caption("a large red circle and a small blue square on a white background")
    source = alt_render.render(scene_for(d, rng), rng, antialias=True)
    images, plans = shipped.variations_with_plans([source], num_images=2, seed=0)
    assert len(images) == 2 and plans[0].reading.description is not None
    assert sum(judge_prompt(world.Description(tuple(world.Phrase(p.shape, p.colour) for p in d.phrases)), im)["binding"]
               for im in images) >= 1
    via = shipped.render(["a large red circle and a small blue square"], num_images=1, seed=0, via_prior=True)
    assert len(via) == 1 and via[0].size == (64, 64)


def test_the_render_tab_shows_its_reading_and_makes_variations(tmp_path):
    """The built-in app through gradio_client, as a user calls it: a prompt with words the world does not know,
    the layout drawn, an uploaded image's variations, a broken upload."""
    from conftest import launched_app
    from gradio_client import handle_file

    from clipgpt_core import load_bundle
    with launched_app(load_bundle()) as client:
        gallery, reading, layouts = client.predict("a red star left of a fluffy blue circle", "", 4.0, 4, 0, 2, False,
                                                   api_name="/render")
        assert len(gallery) == 2 and len(layouts) == 2
        assert "read as: a red star left of a blue circle" in reading and "not understood: fluffy" in reading
        assert {"red star", "blue circle"} <= set(layouts[0]["caption"].split(", "))
        _, reading, _ = client.predict("two green squares", "", 4.0, 4, 0, 1, True, api_name="/render")
        assert "Via the prior" in reading and "read as:" in reading
        rng = random.Random(0)
        d = parse_caption("a large yellow triangle and a small purple cross on a gray background")
        alt_render.render(scene_for(d, rng), rng, antialias=True).save(tmp_path / "scene.png")
        gallery, reading, layouts = client.predict(handle_file(str(tmp_path / "scene.png")), 2, 0, 4.0, 4,
                                                   api_name="/render_variations")
        assert len(gallery) == 2 and "embedding, read as" in reading
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        with pytest.raises(Exception, match="(?i)not an image|could not|broken|truncated"):
            client.predict(handle_file(str(tmp_path / "broken.png")), 1, 0, 4.0, 2, api_name="/render_variations")
        assert len(client.predict("a blue square", "", 4.0, 2, 0, 1, False, api_name="/render")[0]) == 1   # still up
