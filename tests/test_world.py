"""ShapesWorld: determinism, truthful captions, ground truth that matches the pixels, splits."""
import random
import re

import numpy as np

from clipgpt_core import world


def test_same_seed_same_example():
    a, b = world.example(123), world.example(123)
    assert a.caption == b.caption and a.scene == b.scene
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert world.example(124).caption != a.caption or world.example(124).scene != a.scene


def test_images_are_64px_rgb():
    im = world.example(5).image
    assert im.size == (64, 64) and im.mode == "RGB"


def _object_words(caption):
    return [(m.group(1), m.group(2)) for m in re.finditer(
        r"\b(?:(red|orange|yellow|green|blue|purple|white|black) )?(circle|square|triangle|star|cross|diamond)", caption)]


def test_captions_state_only_true_things():
    """Read the caption text (not the structure it came from) and check it against the scene."""
    for seed in range(600):
        _check_caption_text(world.example(seed))


def _check_caption_text(ex):
    scene, cap = ex.scene, ex.caption
    assert cap == cap.lower() and cap.strip() == cap
    bg = re.search(r"(?:on|with) a (\w+) background", cap)
    if bg:
        assert bg.group(1) == scene.background
    # every (colour, shape) named exists in the scene
    for colour, shape in _object_words(cap.split(" background")[0]):
        assert any(o.shape == shape and colour in (None, o.colour) for o in scene.objects), (cap, scene)
    if len(scene.objects) == 1:
        o = scene.objects[0]
        for size in ("small", "large"):
            if re.search(rf"\b{size}\b", cap):
                assert o.size == size, cap
        pos = re.search(r"(?:in|at) the ((?:top|bottom) (?:left|right)|top|bottom|left|right|center)\b", cap)
        if pos:
            assert o.position == pos.group(1), (cap, o)
    count = re.match(r"(two|three|four) ", cap)
    if count:
        assert len(scene.objects) == {"two": 2, "three": 3, "four": 4}[count.group(1)]
        assert len({o.shape for o in scene.objects}) == 1


def test_relations_respect_the_12px_rule():
    rng = random.Random(0)
    seen = 0
    for _ in range(2000):
        scene = world.sample_scene(rng, n_objects=2)
        d = world.describe(scene, rng, must_state={"relation"})
        if d.relation:
            seen += 1
            a = next(o for o in scene.objects if d.phrases[0].matches(o) and o is not None)
            b = next(o for o in scene.objects if o is not a)
            if d.phrases[1].matches(b):
                dx, dy = b.cx - a.cx, b.cy - a.cy
                need = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[d.relation]
                assert need >= 12
    assert seen > 500


def test_hard_negatives_are_false_and_captions_true():
    rng = random.Random(1)
    for seed in range(300):
        ex = world.example(seed)
        assert world.is_true(ex.description, ex.scene)
        for neg in world.negatives(ex.description, ex.scene, rng, n=4):
            assert not world.is_true(neg, ex.scene)


def test_pixels_match_ground_truth():
    """The object's colour is at its centre and the background colour in an empty corner."""
    for seed in range(200):
        ex = world.example(seed, n_objects=1, robust_style=False)
        o = ex.scene.objects[0]
        px = np.asarray(ex.image, dtype=int)
        centre = px[int(o.cy), int(o.cx)]
        assert np.abs(centre - world.COLOURS[o.colour]).max() <= 40, (seed, o)
        corner = (2, 2) if o.cx > 20 or o.cy > 20 else (61, 61)
        assert np.abs(px[corner[1], corner[0]] - world.BACKGROUNDS[ex.scene.background]).max() <= 13


def test_objects_never_overlap_nor_match_background():
    rng = random.Random(2)
    for _ in range(500):
        scene = world.sample_scene(rng, n_objects=4)
        for o in scene.objects:
            assert o.colour != scene.background
            assert o.size == "small" and 10 <= o.extent <= 14 or o.size == "large" and 22 <= o.extent <= 28
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1:]:
                assert np.hypot(a.cx - b.cx, a.cy - b.cy) > (a.extent + b.extent) / 2


def test_heldout_split():
    rng = random.Random(3)
    for _ in range(500):
        for o in world.sample_scene(rng, split="train").objects:
            assert (o.colour, o.shape) not in world.HELDOUT_PAIRS
        for o in world.sample_scene(rng, split="heldout").objects:
            assert (o.colour, o.shape) in world.HELDOUT_PAIRS
    for _ in range(300):
        scene = world.sample_scene(rng, split="train")
        edit = world.edited_scene(scene, rng, split="train")
        if edit:
            assert all((o.colour, o.shape) not in world.HELDOUT_PAIRS for o in edit[0].objects)


def test_positions_cover_the_grid():
    assert world.Obj("red", "circle", "small", 5, 5, 12, 0).position == "top left"
    assert world.Obj("red", "circle", "small", 32, 32, 12, 0).position == "center"
    assert world.Obj("red", "circle", "small", 60, 40, 12, 0).position == "right"
    assert world.Obj("red", "circle", "small", 40, 60, 12, 0).position == "bottom"


def test_counts_agree_with_their_noun():
    one, three = (world.Description((world.Phrase("circle", colour="red"),), count=k) for k in (1, 3))
    assert world.caption_text(one) == "one red circle"
    assert world.caption_text(three) == "three red circles"


def test_world_scenes_make_single_objects_large_at_the_asked_share():
    from clipgpt_core.world.corpus import world_scenes
    images, scenes = world_scenes(random.Random(0), 60, object_mix=(1, 0, 0, 0), large_share=1.0)
    assert len(images) == 60 and all(o.size == "large" for s in scenes for o in s.objects)
    _, scenes = world_scenes(random.Random(0), 60, object_mix=(1, 0, 0, 0))      # the world's own sizes
    assert 10 < sum(s.objects[0].size == "large" for s in scenes) < 50


def test_the_vocabulary_holds_every_word_the_world_writes():
    """corpus.vocabulary(): captions in every form (lists, relations, counts, positions, backgrounds, sizes first or
    second), edits in every accepted wording, the difference question -- their tokens are the vocabulary's."""
    from clipgpt_core.models.caption_prior import CaptionPrior
    from clipgpt_core.models.clip import create_clip
    from clipgpt_core.world import edits as E
    from clipgpt_core.world.corpus import vocabulary, world_captions
    prior = CaptionPrior.from_clip(create_clip("shapes-clip"))
    rng = random.Random(5)
    texts = world_captions(rng, 3000) + [E.DIFF_QUESTION]
    texts += [world.caption_text(world.Description((world.Phrase("star", "red"),), count=k)) for k in (2, 3, 4)]
    while len(texts) < 4000:
        made = E.random_edit(world.sample_scene(rng), rng)
        if made is not None:
            texts.append(E.edit_text(made[0], rng))
    assert set(prior.token_ids(texts)) == set(prior.token_ids(vocabulary()))
