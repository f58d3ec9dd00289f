"""The world's edit language (clipgpt_core/world/edits.py): every wording read back, edits made exactly, near
misses that differ, and what cannot be done refused."""
import random

import pytest

from clipgpt_core.world import edits as E
from clipgpt_core.world import scenes as world
from clipgpt_core.world.captions import normalise


def scene(*objects, background="gray"):
    """objects: (colour, shape, size, cx, cy)."""
    return world.Scene(background, tuple(world.Obj(c, s, z, x, y, sum(world.SIZES[z]) / 2, 0.0)
                                         for c, s, z, x, y in objects))


def test_every_wording_reads_back_as_its_edit():
    rng = random.Random(0)
    seen = set()
    for _ in range(3000):
        made = E.random_edit(world.sample_scene(rng), rng)
        if made is None:
            continue
        edit = made[0]
        for text in {E.edit_text(edit)} | {E.edit_text(edit, random.Random(i)) for i in range(6)}:
            seen.add(text.split()[0])
            assert E.parse_edit(text) == edit, text
            assert E.parse_edit(text.capitalize() + ".") == edit
    assert seen == {"make", "turn", "replace", "change", "remove", "delete", "add", "put"}


def test_edits_do_what_they_say():
    s = scene(("red", "star", "small", 10, 10), ("blue", "circle", "large", 45, 45))
    blue = E.apply_edit(s, E.parse_edit("make the red star blue"))
    assert [(o.colour, o.shape) for o in blue.objects] == [("blue", "star"), ("blue", "circle")]
    assert blue.objects[0].cx == 10 and blue.objects[0].size == "small"           # only its colour changed
    swapped = E.apply_edit(s, E.parse_edit("replace the blue circle with a green cross"))
    assert swapped.objects[1].colour == "green" and swapped.objects[1].shape == "cross"
    assert E.apply_edit(s, E.parse_edit("remove the red star")).objects == s.objects[1:]
    added = E.apply_edit(s, E.parse_edit("add a small yellow diamond in the top right"))
    assert len(added.objects) == 3 and added.objects[2].position == "top right" and added.objects[2].size == "small"
    assert E.apply_edit(s, E.parse_edit("change the background to black")).background == "black"
    # a replace that keeps the shape is a recolour
    assert E.parse_edit("replace the red star with a blue star") == E.parse_edit("make the red star blue")


@pytest.mark.parametrize("text", ["make the green star blue",         # no such object
                                  "make the red star gray",           # the background's colour
                                  "change the background to blue",    # an object's colour
                                  "remove the blue circle and the red star"])   # not the language
def test_what_cannot_be_done_is_refused(text):
    s = scene(("red", "star", "small", 10, 10), ("blue", "circle", "large", 45, 45))
    edit = E.parse_edit(text)
    assert edit is None or E.apply_edit(s, edit) is None
    one = scene(("red", "star", "small", 10, 10))
    assert E.apply_edit(one, E.parse_edit("remove the red star")) is None             # a scene keeps an object
    two = scene(("red", "star", "small", 10, 10), ("red", "star", "small", 45, 45))
    assert E.apply_edit(two, E.parse_edit("make the red star blue")) is None          # which red star?


def test_near_miss_is_another_scene_and_the_edit_changes_content():
    rng = random.Random(1)
    n = 0
    for _ in range(500):
        s = world.sample_scene(rng, n_objects=2)
        made = E.random_edit(s, rng)
        if made is None:
            continue
        edit, after = made
        assert not E.same_content(s, after)
        miss = E.near_miss(s, edit, rng)
        if miss is not None:
            n += 1
            assert not E.same_content(miss, after) and not E.same_content(miss, s)
    assert n > 300


def test_world_doc_lists_every_form():
    from pathlib import Path
    doc = normalise((Path(__file__).parents[1] / "docs" / "world.md").read_text())
    for forms in E._FORMS.values():
        assert normalise(forms[0].split("{")[0]) in doc


def test_an_edit_that_changes_nothing_is_a_no_op():
    red_star = ("red", "star")
    assert E.is_no_op(E.Edit("recolour", red_star, colour="red"))
    assert not E.is_no_op(E.Edit("recolour", red_star, colour="blue"))
    assert E.is_no_op(E.Edit("replace", red_star, colour="red", shape="star"))
    assert not E.is_no_op(E.Edit("replace", red_star, colour="red", shape="circle"))
    assert E.is_no_op(E.Edit("background", background="gray"), background="gray")
    assert not E.is_no_op(E.Edit("background", background="gray"), background="black")
    assert not E.is_no_op(E.Edit("background", background="gray"))          # the scene's background unknown
    scene = world.sample_scene(random.Random(3), n_objects=2)
    for _ in range(50):                                                      # the world never makes one
        made = E.random_edit(scene, random.Random(_))
        assert made is None or not E.is_no_op(made[0], scene.background)
