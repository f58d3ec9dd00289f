"""Parser for the ShapesWorld caption language (docs/world.md) into `world.Description`,
so that text from any writer (world.caption_text, a captioning model, a person) can be
checked with `world.is_true(parse_caption(text), scene)` and scored attribute by attribute.

Accepted grammar, after lower-casing, collapsing whitespace, dropping one trailing ".",
and reading "grey" as gray, "centre" as center and "top-left" as "top left":

    caption    ::= body [background]
    background ::= ("on a" | "on the" | "with a") BACKGROUND "background"
    body       ::= counted | phrase RELATION phrase | listing
    counted    ::= ("two" | "three" | "four") adjectives PLURAL [position]
    listing    ::= phrase | phrase {("," | "and") phrase} ("and" | ", and") phrase
    phrase     ::= ("a" | "an" | "one") adjectives SHAPE [position]
    adjectives ::= [SIZE] [COLOUR] | COLOUR SIZE
    position   ::= ("in the" | "at the" | "on the") POSITION ["corner"]
    RELATION   ::= "left of" | "right of" | "above" | "below"
    BACKGROUND ::= "gray" | "black" | "white"        SIZE ::= "small" | "large"
    COLOUR, SHAPE, PLURAL, POSITION ::= the words of WORLD.md's vocabulary

Side conditions (any violation -> None):
  * "an" exactly before a vowel-initial word, "a" otherwise ("an orange star", not "a orange star").
  * a/an/one take the singular noun, two/three/four the plural ("two red circle" -> None).
  * "corner" only after a two-word position ("top left corner", not "top corner").
  * a listing has at most four phrases (an image holds one to four objects).
  * a counted phrase is the whole body: it counts every object in the image (WORLD.md: count
    only when all counted objects share the noun), so "two circles and a square" -> None.
"""
from __future__ import annotations

import re
from dataclasses import replace

from . import scenes as world   # the spec: world.COLOURS, world.render, ...

COUNT_WORDS = {"two": 2, "three": 3, "four": 4}
_SINGULAR = {plural: shape for shape, plural in world.PLURALS.items()}
_ALIASES = {"grey": "gray", "centre": "center"}  # spelling variants, same concept


# words that can stand in for one another in a caption: the captioner's one-word edits
WORD_GROUPS = [list(world.COLOURS), list(world.SHAPES), list(world.PLURALS.values()), list(world.SIZES)]


def form_words(form: str) -> set[str]:
    """The words and punctuation of a phrasing, its {slots} left out."""
    return {w for w in re.findall(r"\{\w*\}|\w+|[^\w\s]", form) if not w.startswith("{")}


def caption_words() -> set[str]:
    """Every word caption_text can write: attributes, counts, relations, positions, backgrounds, their forms,
    articles and the list's joints."""
    words = set(world.COLOURS) | set(world.SHAPES) | set(world.PLURALS.values()) | set(world.SIZES)
    words |= set(world.BACKGROUNDS) | set(world.COUNT_WORDS.values()) | {"a", "an", "and", ","}
    for form in [*world.POSITIONS, *world.RELATIONS, *world.POSITION_FORMS, *world.BACKGROUND_FORMS]:
        words |= form_words(form)
    return words


def alternatives(words) -> str:
    # longest first, so "top left" is tried before "top"
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


_PHRASE = re.compile(
    rf"(a|an|one|two|three|four) (?:({alternatives(world.SIZES)}) )?"
    rf"(?:({alternatives(world.COLOURS)}) )?(?:({alternatives(world.SIZES)}) )?"
    rf"({alternatives(world.SHAPES + list(_SINGULAR))})"
    rf"(?: (?:in|at|on) the ({alternatives(world.POSITIONS)})( corner)?)?")
_BACKGROUND = re.compile(rf"(.+) (?:on a|on the|with a) ({alternatives(world.BACKGROUNDS)}) background")
# "left of" etc. never occur inside a phrase (a position is never followed by "of"), so the
# relation can be found by splitting: "in the top left of a square" reads as top + "left of".
_RELATION_SPLIT = re.compile(rf" ({alternatives(world.RELATIONS)}) ")
_LIST_SPLIT = re.compile(r" (, and|,|and) ")


def _parse_phrase(text: str) -> tuple[str, world.Phrase] | None:
    """One noun phrase -> (its determiner, Phrase), or None."""
    m = _PHRASE.fullmatch(text)
    if not m:
        return None
    det, size_before, colour, size_after, noun, position, corner = m.groups()
    if size_before and size_after:  # "a small red large circle"
        return None
    if corner and " " not in position:  # "in the top corner" names no corner
        return None
    plural = noun in _SINGULAR
    if plural != (det in COUNT_WORDS):  # "two red circle", "a red circles"
        return None
    first_word = next(w for w in (size_before, colour, size_after, noun) if w)
    if det in ("a", "an") and det != ("an" if first_word[0] in "aeiou" else "a"):
        return None
    return det, world.Phrase(_SINGULAR.get(noun, noun), colour, size_before or size_after, position)


def normalise(text: str) -> str:
    """The caption language's spelling: lower case, one trailing "." dropped, commas as words, "top-left" as
    "top left", "grey" as gray and "centre" as center, single spaces."""
    s = text.strip().lower()
    s = s[:-1] if s.endswith(".") else s
    s = re.sub(r"\b(top|bottom)-(left|right)\b", r"\1 \2", s.replace(",", " , "))
    return " ".join(_ALIASES.get(w, w) for w in s.split())


def parse_caption(text: str) -> world.Description | None:
    """The Description a caption states, or None if it is not in the caption language."""
    if not isinstance(text, str):
        return None
    s = normalise(text)
    background = None
    if m := _BACKGROUND.fullmatch(s):
        s, background = m.groups()

    parts = _RELATION_SPLIT.split(s)
    if len(parts) > 3:  # a relation joins exactly two phrases
        return None
    if len(parts) == 3:
        a, b = _parse_phrase(parts[0]), _parse_phrase(parts[2])
        if not a or not b or a[0] in COUNT_WORDS or b[0] in COUNT_WORDS:
            return None
        return world.Description((a[1], b[1]), relation=parts[1], background=background)

    parts = _LIST_SPLIT.split(s)
    texts, separators = parts[::2], parts[1::2]
    if len(texts) > 4 or (separators and separators[-1] == ","):  # "a circle, a square" lacks its "and"
        return None
    parsed = [_parse_phrase(t) for t in texts]
    if not all(parsed):
        return None
    if len(parsed) == 1 and parsed[0][0] in COUNT_WORDS:
        return world.Description((parsed[0][1],), count=COUNT_WORDS[parsed[0][0]], background=background)
    if any(det in COUNT_WORDS for det, _ in parsed):
        return None
    return world.Description(tuple(p for _, p in parsed), background=background)


def dropped_phrases(text: str) -> list[str]:
    """A listing of objects with one of them left out, each way (in the canonical wording); [] for other captions."""
    d = parse_caption(text)
    if d is None or d.count or d.relation or len(d.phrases) < 2:
        return []
    return [world.caption_text(replace(d, phrases=d.phrases[:i] + d.phrases[i + 1:])) for i in range(len(d.phrases))]


def singular(noun: str) -> str | None:
    """The shape a noun names, singular or plural ("crosses" -> "cross"); None if it names none."""
    return noun if noun in world.SHAPES else _SINGULAR.get(noun)


def is_valid_caption(text: str) -> bool:
    return parse_caption(text) is not None


def stated_attributes(d: world.Description | None, index: int = 0) -> dict[str, str | int]:
    """{attribute: value} that `d` states about its phrase `index` (the only phrase of a
    one-object or counted caption): shape always; colour, size, position and background
    when stated; count for counted captions. Keys follow world.ATTRIBUTES. A caption that
    does not parse (None) states nothing: {}."""
    if d is None:
        return {}
    p = d.phrases[index]
    stated = {"shape": p.shape, "colour": p.colour, "size": p.size, "position": p.position,
              "background": d.background, "count": d.count}
    return {k: v for k, v in stated.items() if v is not None}


# ----------------------------------------------------------------------------- reading an explanation
_VALUES = {
    "position": sorted(world.POSITIONS, key=len, reverse=True),
    "colour": list(world.COLOURS),
    "shape": world.SHAPES + list(world.PLURALS.values()),
    "size": list(world.SIZES),
}


def stated_values(text: str) -> dict[str, set[str]]:
    """{attribute: values} a text states about ShapesWorld attributes. A caption of the world's language
    is parsed exactly (parse_caption, every phrase); any other text (a concept word, learned
    tokens read out) is scanned for attribute words: "X background" is a background, position names
    (longest first) are positions, then colours, shapes (and plurals) and sizes. A relation is stated as
    relation_values says ("red left of blue", "circle above square")."""
    out: dict[str, set[str]] = {}
    d = parse_caption(text)
    if d is not None:
        for i in range(len(d.phrases)):
            for k, v in stated_attributes(d, i).items():
                if k != "count":
                    out.setdefault(k, set()).add(v)
        if d.relation:
            sides = [[v for v in (p.colour, p.shape) if v] for p in d.phrases]
            out["relation"] = relation_values(sides[0], d.relation, sides[1])
        return out
    s = " " + " ".join(re.findall(r"[a-z]+", str(text).lower().replace("grey", "gray").replace("centre", "center"))) + " "
    relations = _scan_relations(s)
    if relations:
        out["relation"] = relations
        for r in world.RELATIONS:                  # "left of" names no position
            s = s.replace(f" {r} ", " , ")
    for bg in world.BACKGROUNDS:
        if re.search(rf" {bg} background", s):
            out.setdefault("background", set()).add(bg)
            s = re.sub(rf" {bg} background", " ", s)
    s = s.replace(" background ", " ")
    for attr, values in _VALUES.items():
        for v in values:
            if f" {v} " in s:
                out.setdefault(attr, set()).add(singular(v) or v)
                s = s.replace(f" {v} ", " ")
    return out


def relation_values(left: list[str], relation: str, right: list[str]) -> set[str]:
    """What "<left> <relation> <right>" states, each side by each of its words (a colour, a shape), in one
    spelling: "right of" and "below" turned round ("a blue star right of a red circle" states "red left of
    blue", "circle left of star", "red left of star" and "circle left of blue")."""
    if relation in ("right of", "below"):
        left, right, relation = right, left, {"right of": "left of", "below": "above"}[relation]
    return {f"{a} {relation} {b}" for a in left for b in right}


def _scan_relations(s: str) -> set[str]:
    """Relations in free text: the colour and shape words next to each relation ("a red object left of a blue
    one" -> {"red left of blue"}), up to the words that end a phrase."""
    words = s.split()
    known = set(world.COLOURS) | set(world.SHAPES) | set(world.PLURALS.values())
    out = set()
    for i in range(len(words)):
        for r in world.RELATIONS:
            n = len(r.split())
            if words[i:i + n] != r.split():
                continue
            before, after = [], []
            for w in reversed(words[:i]):
                if w in ("and", "or", "but", "not") or w in world.RELATIONS:
                    break
                if w in known:
                    before.append(singular(w) or w)
            for w in words[i + n:]:
                if w in ("and", "or", "but", "not", "background"):
                    break
                if w in known:
                    after.append(singular(w) or w)
            if before and after:
                out |= relation_values(before, r, after)
    return out


def states_answer(text: str, answer: dict) -> bool:
    """Does the text state the answer: for each of its attributes, a value it states is an accepted one
    and it states no other value of that attribute ("a red circle" states {"colour": "red"}; "a red
    circle and a blue square" does not, it names two colours)."""
    stated = stated_values(text)
    for attr, want in answer.items():
        ok = set(want) if isinstance(want, (tuple, list, set, frozenset)) else {want}
        got = stated.get(attr, set())
        if attr == "relation":       # one relation stated several ways (by colour, by shape): one must be it
            if not got & ok:
                return False
            continue
        if not got or not got <= ok:
            return False
    return True
