"""Caption parser: round trip with world.caption_text, WORLD.md's examples, rejection of
ungrammatical text, truth of parsed captions and falsity of parsed hard negatives."""
import random

import pytest

from clipgpt_core import world
from clipgpt_core.world.captions import is_valid_caption, parse_caption, stated_attributes

P, D = world.Phrase, world.Description


def _generated(n_seeds=1000):
    """(scene, description, rng) for many scenes, including forced positions and relations
    so every phrasing caption_text has is exercised. No rendering, so this is fast."""
    for seed in range(n_seeds):
        rng = random.Random(seed)
        scene = world.sample_scene(rng, split="any")
        must_state = [frozenset(), {"position"}, {"relation"}, {"colour", "size", "background"}][seed % 4]
        yield scene, world.describe(scene, rng, must_state), rng


def test_round_trip_and_truth():
    forms = set()
    for scene, d, rng in _generated():
        for text in (world.caption_text(d), world.caption_text(d, rng)):
            parsed = parse_caption(text)
            assert parsed == d, text  # field by field, phrase order kept
            assert world.is_true(parsed, scene), text
            forms.add("count" if d.count else "relation" if d.relation else len(d.phrases))
    assert forms == {"count", "relation", 1, 2, 3, 4}


def test_hard_negatives_parse_and_are_false():
    n = 0
    for scene, d, rng in _generated(400):
        for neg in world.negatives(d, scene, rng, n=3):
            text = world.caption_text(neg, rng)
            parsed = parse_caption(text)
            assert parsed == neg, text
            assert not world.is_true(parsed, scene), text
            n += 1
    assert n > 800


@pytest.mark.parametrize("text, expected", [
    # WORLD.md's examples
    ("a small red circle in the top left", D((P("circle", "red", "small", "top left"),))),
    ("a large blue square on a black background", D((P("square", "blue", "large"),), background="black")),
    ("two yellow stars", D((P("star", "yellow"),), count=2)),
    ("a green triangle left of a purple cross", D((P("triangle", "green"), P("cross", "purple")), relation="left of")),
    ("a white diamond above an orange circle on a gray background",
     D((P("diamond", "white"), P("circle", "orange")), relation="above", background="gray")),
    ("three small circles", D((P("circle", size="small"),), count=3)),
    ("a red circle", D((P("circle", "red"),))),
    # other writers, same vocabulary
    ("  A Red  Small Circle At The Center. ", D((P("circle", "red", "small", "center"),))),
    ("an orange star on the right", D((P("star", "orange", position="right"),))),
    ("one cross in the bottom-right corner with a white background",
     D((P("cross", position="bottom right"),), background="white")),
    ("a circle in the centre on a grey background", D((P("circle", position="center"),), background="gray")),
    ("a circle in the top left of a square", D((P("circle", position="top"), P("square")), relation="left of")),
    ("a circle in the left left of a square", D((P("circle", position="left"), P("square")), relation="left of")),
    ("a red circle, a blue square, and a star", D((P("circle", "red"), P("square", "blue"), P("star")))),
    ("a circle and a square and a star", D((P("circle"), P("square"), P("star")))),
    ("four large crosses in the top left", D((P("cross", size="large", position="top left"),), count=4)),
    ("two diamonds on the black background", D((P("diamond"),), count=2, background="black")),
])
def test_valid_captions(text, expected):
    assert parse_caption(text) == expected
    assert is_valid_caption(text)


@pytest.mark.parametrize("text", [
    "", "   ", ".", "circle", "red circle", "the red circle", "a", "background",
    "two red circle", "a red circles", "one circles", "four circle", "five circles", "2 circles",
    "an red circle", "a orange star", "an circle",
    "a red blue circle", "a small large circle", "a small red small circle", "a red red circle",
    "a purple elephant", "a red shape", "a pink circle", "a grey circle", "a medium circle",
    "a circle left of a square above a star", "a circle left of a square and a star",
    "a circle left of", "left of a square", "a circle left of two squares", "two circles above a star",
    "two circles and a square", "a square and two circles",
    "a red circle and", "and a red circle", "a red circle, a blue square", "a circle and, a square",
    "a circle, a square, a star, a cross and a diamond",
    "a red circle on a red background", "a red circle on a black background in the top left",
    "a red circle on a black background on a white background", "on a black background",
    "a circle in the top corner", "a circle in top left", "a circle in the middle", "a circle in the top left left",
    "a red circle!", "a red circle..", "a red circle please", "a red circle a blue square",
])
def test_invalid_captions(text):
    assert parse_caption(text) is None
    assert not is_valid_caption(text)


def test_non_string_is_invalid():
    assert parse_caption(None) is None


def test_stated_attributes():
    assert stated_attributes(parse_caption("a small red circle in the top left on a black background")) == {
        "shape": "circle", "colour": "red", "size": "small", "position": "top left", "background": "black"}
    assert stated_attributes(parse_caption("a star")) == {"shape": "star"}
    assert stated_attributes(parse_caption("three blue squares")) == {"shape": "square", "colour": "blue", "count": 3}
    assert stated_attributes(parse_caption("a circle above a red star"), index=1) == {"shape": "star", "colour": "red"}
    assert stated_attributes(parse_caption("a red blue circle")) == {}
    assert set(stated_attributes(parse_caption("a small red circle in the top left on a white background"))) \
        <= set(world.ATTRIBUTES) | {"count"}
