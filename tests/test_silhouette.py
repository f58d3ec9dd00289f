"""The benchmark's silhouette shape judge (benchmarks/silhouette.py) on real ShapesWorld pixels."""
import random

import numpy as np
import pytest
from PIL import Image

from benchmarks import alt_render
from benchmarks.silhouette import judge_shape
from clipgpt_core import world


def _scene(rng, shapes, sizes):
    bg = rng.choice(list(world.BACKGROUNDS))
    kinds = [(rng.choice([c for c in world.COLOURS if c != bg]), s) for s in shapes]
    return world.sample_scene(rng, kinds=kinds, background=bg, sizes=sizes)


def _draw(renderer, scene, rng):
    if renderer == "world":
        return world.render(scene, rng, world.RenderStyle.random(rng))
    return alt_render.render(scene, rng, antialias=rng.random() < 0.5)


@pytest.mark.parametrize("renderer", ["world", "alt"])
def test_judge_names_the_shape_of_large_objects(renderer):
    rng = random.Random(2024)
    hits = []
    for shape in world.SHAPES:
        for _ in range(10):
            scene = _scene(rng, [shape], ["large"])
            got, info = judge_shape(_draw(renderer, scene, rng))
            hits.append(got == shape)
            assert info["area"] > 100
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_judge_takes_the_largest_of_two_objects():
    rng = random.Random(7)
    hits = []
    for renderer in ("world", "alt"):
        for shape in world.SHAPES:
            scene = _scene(rng, [shape, rng.choice(world.SHAPES)], ["large", "small"])
            hits.append(judge_shape(_draw(renderer, scene, rng), scene.background)[0] == shape)
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_blank_images_have_no_shape():
    for name, rgb in world.BACKGROUNDS.items():
        assert judge_shape(Image.new("RGB", (64, 64), rgb))[0] is None
        assert judge_shape(Image.new("RGB", (64, 64), rgb), name)[0] is None
    noisy = np.random.default_rng(0).normal(128, 4, (64, 64, 3))
    shape, info = judge_shape(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert shape is None and info["area"] == 0
