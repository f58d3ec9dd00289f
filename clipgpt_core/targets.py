"""Functions of images to explain (the Explain tab's targets): f(image) -> float.

Three kinds, all ending as a float score per image:
  * planted functions with known answers, computed from a ShapesWorld scene's ground truth (or from
    pixels): `PLANTED["has_red"].score(scenes, images)`; `.answer` holds the attribute values a right
    explanation states ({"colour": "red"}), checked with `states_answer(text, answer)`;
  * a vision model's logits or units: `ClassifierTarget` (the shipped ShapesWorld CNN, see
    train_classifier.py) or `ModelUnit` (any torch vision model, a layer picked by name + a unit,
    read through a forward hook);
  * the user's own scores: `scores_from_csv(path)` or `scores_from_folders(pos, neg)`.

    images = [world.example(i, split="any").image for i in range(256)]
    f = PLANTED["number_of_circles"].score([world.example(i, split="any").scene for i in range(256)], images)
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import ClipGPTError
from . import world
from .access import ServerFiles
from .captions import parse_caption, stated_attributes
from .images import load_image
from .paths import ASSETS

if TYPE_CHECKING:
    import torch
    from torch import nn
    from .classifier import ShapesClassifier

MIN_IMAGES = 8            # fewer images than this cannot be split into fit / held-out halves usefully
TOP_ROW = ("top left", "top", "top right")
BOTTOM_ROW = ("bottom left", "bottom", "bottom right")


class TargetError(ClipGPTError, ValueError):
    """Scores or images that cannot be explained; the message says what is wrong."""


# ----------------------------------------------------------------------------- planted functions
@dataclass(frozen=True)
class Planted:
    """A function of images with a known answer: the attribute values a right explanation states.
    An answer value may be a tuple of acceptable values ({"position": TOP_ROW})."""
    name: str
    description: str
    fn: Callable                       # (scene | None, image | None) -> float
    answer: dict
    needs_scene: bool = True           # False: computed from pixels alone (works on the user's images)

    def score(self, scenes=None, images=None) -> np.ndarray:
        if self.needs_scene:
            if scenes is None:
                raise TargetError(f"“{self.description}” is computed from ShapesWorld ground truth; use the "
                                  f"built-in gallery sample (or pick a pixel-based function for your own images)")
            return np.array([self.fn(s, None) for s in scenes], dtype=np.float64)
        if images is None:
            raise TargetError(f"“{self.description}” needs the images")
        return np.array([self.fn(None, load_image(im)) for im in images], dtype=np.float64)

    @property
    def single_attribute(self) -> bool:
        return len(self.answer) == 1


def _count(pred) -> Callable:
    return lambda scene, _im: float(sum(1 for o in scene.objects if pred(o)))


def _any(pred) -> Callable:
    return lambda scene, _im: float(any(pred(o) for o in scene.objects))


def _area(pred) -> Callable:
    """Total object area in pixels (extent^2: a proxy the same for every shape)."""
    return lambda scene, _im: float(sum(o.extent ** 2 for o in scene.objects if pred(o)))


def _pixel_fraction(colour: str, tol: int = 40) -> Callable:
    """Share of pixels within `tol` (per channel) of a colour's RGB: pixels only, no scene needed."""
    rgb = np.array(world.COLOURS[colour], dtype=np.int16)

    def fn(_scene, image):
        a = np.asarray(image.convert("RGB"), dtype=np.int16)
        return float((np.abs(a - rgb).max(-1) <= tol).mean())
    return fn


def _background(name: str) -> Callable:
    return lambda scene, _im: float(scene.background == name)


def _planted() -> dict[str, Planted]:
    p: list[Planted] = []
    for c in ("red", "blue", "green", "yellow", "purple", "orange"):
        p.append(Planted(f"has_{c}", f"has a {c} object", _any(lambda o, c=c: o.colour == c), {"colour": c}))
    for c in ("red", "blue"):
        p.append(Planted(f"area_of_{c}", f"area of {c} (share of {c} pixels)", _pixel_fraction(c), {"colour": c},
                         needs_scene=False))
    p.append(Planted("area_of_green", "area of green objects", _area(lambda o: o.colour == "green"),
                     {"colour": "green"}))
    p.append(Planted("number_of_circles", "number of circles", _count(lambda o: o.shape == "circle"),
                     {"shape": "circle"}))
    for s in ("star", "triangle", "square", "cross", "diamond"):
        p.append(Planted(f"has_{s}", f"has a {s}", _any(lambda o, s=s: o.shape == s), {"shape": s}))
    p.append(Planted("large_objects", "number of large objects", _count(lambda o: o.size == "large"),
                     {"size": "large"}))
    p.append(Planted("small_objects", "number of small objects", _count(lambda o: o.size == "small"),
                     {"size": "small"}))
    for pos in ("top left", "center", "bottom right"):
        p.append(Planted(f"object_{pos.replace(' ', '_')}", f"an object in the {pos}",
                         _any(lambda o, pos=pos: o.position == pos), {"position": pos}))
    p.append(Planted("object_top_row", "an object in the top row", _any(lambda o: o.position in TOP_ROW),
                     {"position": TOP_ROW}))
    for bg in world.BACKGROUNDS:
        p.append(Planted(f"{bg}_background", f"{bg} background", _background(bg), {"background": bg}))
    # two attributes
    p.append(Planted("red_star", "a red star (a held-out pair)", _any(lambda o: (o.colour, o.shape) == ("red", "star")),
                     {"colour": "red", "shape": "star"}))
    p.append(Planted("star_top_half", "a star in the top half", _any(lambda o: o.shape == "star" and o.cy < 32),
                     {"shape": "star", "position": TOP_ROW + ("left", "center", "right")}))
    p.append(Planted("large_blue", "a large blue object", _any(lambda o: o.colour == "blue" and o.size == "large"),
                     {"colour": "blue", "size": "large"}))
    p.append(Planted("green_circle", "a green circle", _any(lambda o: (o.colour, o.shape) == ("green", "circle")),
                     {"colour": "green", "shape": "circle"}))
    p.append(Planted("circle_on_black", "a circle on a black background",
                     lambda s, _im: float(s.background == "black" and any(o.shape == "circle" for o in s.objects)),
                     {"shape": "circle", "background": "black"}))
    return {x.name: x for x in p}


PLANTED = _planted()


# ----------------------------------------------------------------------------- reading an explanation
_VALUES = {
    "position": sorted(world.POSITIONS, key=len, reverse=True),
    "colour": list(world.COLOURS),
    "shape": world.SHAPES + list(world.PLURALS.values()),
    "size": list(world.SIZES),
}
_SINGULAR = {v: k for k, v in world.PLURALS.items()}


def stated_values(text: str) -> dict[str, set[str]]:
    """{attribute: values} a text states about ShapesWorld attributes. A caption of the world's language
    is parsed exactly (captions.parse_caption, every phrase); any other text (a concept word, learned
    tokens read out) is scanned for attribute words: "X background" is a background, position names
    (longest first) are positions, then colours, shapes (and plurals) and sizes."""
    out: dict[str, set[str]] = {}
    d = parse_caption(text)
    if d is not None:
        for i in range(len(d.phrases)):
            for k, v in stated_attributes(d, i).items():
                if k != "count":
                    out.setdefault(k, set()).add(v)
        return out
    s = " " + " ".join(re.findall(r"[a-z]+", str(text).lower().replace("grey", "gray").replace("centre", "center"))) + " "
    for bg in world.BACKGROUNDS:
        if re.search(rf" {bg} background", s):
            out.setdefault("background", set()).add(bg)
            s = re.sub(rf" {bg} background", " ", s)
    s = s.replace(" background ", " ")
    for attr, values in _VALUES.items():
        for v in values:
            if f" {v} " in s:
                out.setdefault(attr, set()).add(_SINGULAR.get(v, v))
                s = s.replace(f" {v} ", " ")
    return out


def states_answer(text: str, answer: dict) -> bool:
    """Does the text state the answer: for each of its attributes, a value it states is an accepted one
    and it states no other value of that attribute ("a red circle" states {"colour": "red"}; "a red
    circle and a blue square" does not, it names two colours)."""
    stated = stated_values(text)
    for attr, want in answer.items():
        ok = set(want) if isinstance(want, (tuple, list, set, frozenset)) else {want}
        got = stated.get(attr, set())
        if not got or not got <= ok:
            return False
    return True


# ----------------------------------------------------------------------------- vision models
# torch is imported where a model is loaded or run: the Explain tab is laid out from this module (its
# planted functions and the classifier's output names) before any model is in memory
CLASSIFIER_DIR = ASSETS / "shapes" / "classifier"
CLASSIFIER_FILES = ("classifier.safetensors", "classifier_config.json")     # classifier.py's weights, config


def classifier_dir(bundle=None) -> Path | None:
    """The bundle's ShapesWorld classifier folder (its classifier/, else the built-in one for a ShapesWorld
    bundle), or None when there is none."""
    for d in ([Path(bundle.path) / "classifier"] if bundle is not None and bundle.path else []) + [CLASSIFIER_DIR]:
        if (d / CLASSIFIER_FILES[0]).is_file():
            if bundle is not None and d == CLASSIFIER_DIR and not bundle.is_shapes_world:
                return None
            return d
    return None


def load_classifier(bundle=None) -> ShapesClassifier | None:
    """The ShapesClassifier in classifier_dir(bundle), or None."""
    from .classifier import ShapesClassifier
    d = classifier_dir(bundle)
    return ShapesClassifier.load(d) if d is not None else None


def classifier_outputs(bundle=None) -> list[str]:
    """The output names ClassifierTarget takes, read from the classifier's config (no model is loaded)."""
    d = classifier_dir(bundle)
    if d is None:
        return []
    cfg = json.loads((d / CLASSIFIER_FILES[1]).read_text())
    return output_names(cfg["shapes"], cfg["colours"], cfg["hidden"])


def output_names(shapes, colours, hidden: int) -> list[str]:
    return [f"shape:{s}" for s in shapes] + [f"colour:{c}" for c in colours] + [f"unit {i}" for i in range(hidden)]


@dataclass
class ClassifierTarget:
    """One output of the ShapesWorld classifier: "shape:circle" / "colour:red" (a logit) or "unit 12"
    (a penultimate unit). `answer` is known for logits: the class."""
    model: ShapesClassifier
    output: str
    batch_size: int = 256

    def __post_init__(self):
        if self.output not in self.outputs(self.model):
            raise TargetError(f"The classifier has no output {self.output!r}; pick one of "
                              f"{', '.join(self.outputs(self.model)[:20])}, ...")

    @staticmethod
    def outputs(model: ShapesClassifier) -> list[str]:
        return output_names(model.cfg.shapes, model.cfg.colours, model.cfg.hidden)

    @property
    def answer(self) -> dict:
        head, _, value = self.output.partition(":")
        return {head: value} if value else {}

    def score(self, images) -> np.ndarray:
        import torch
        images = list(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            with torch.no_grad():
                x = self.model.tensor(images[i:i + self.batch_size])
                if self.output.startswith("unit "):
                    out.append(self.model.features(x)[:, int(self.output.split()[1])])
                else:
                    head, _, value = self.output.partition(":")
                    classes = self.model.cfg.shapes if head == "shape" else self.model.cfg.colours
                    out.append(self.model(x)[head][:, list(classes).index(value)])
        return torch.cat(out).double().numpy()


@dataclass
class ModelUnit:
    """A unit of any torch vision model: the output of the module named `layer` (as in
    model.named_modules(), "" for the whole model), channel `unit`, averaged over space, read with a
    forward hook. `preprocess` maps a PIL image to a (3, H, W) tensor (default: 224x224, ImageNet
    normalisation)."""
    model: nn.Module
    layer: str
    unit: int
    preprocess: Callable | None = None
    batch_size: int = 64
    answer: dict = field(default_factory=dict)

    def __post_init__(self):
        modules = dict(self.model.named_modules())
        if self.layer not in modules:
            names = [n for n in modules if n][:30]
            raise TargetError(f"The model has no layer {self.layer!r}; layers include {', '.join(names)}")
        self.model.eval()

    def _default_preprocess(self, image: Image.Image) -> torch.Tensor:
        import torch
        a = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255
        x = torch.from_numpy(a).permute(2, 0, 1)
        return (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def score(self, images) -> np.ndarray:
        import torch
        pre = self.preprocess or self._default_preprocess
        module = dict(self.model.named_modules())[self.layer]
        got = []
        handle = module.register_forward_hook(lambda _m, _i, out: got.append(out[0] if isinstance(out, tuple) else out))
        try:
            images = list(images)
            out = []
            for i in range(0, len(images), self.batch_size):
                got.clear()
                with torch.no_grad():
                    self.model(torch.stack([pre(load_image(im)) for im in images[i:i + self.batch_size]]))
                a = got[0]                                                  # (B, C, ...) or (B, C)
                if self.unit >= a.shape[1]:
                    raise TargetError(f"Layer {self.layer!r} has {a.shape[1]} units; unit {self.unit} does not exist")
                a = a[:, self.unit]
                out.append(a.flatten(1).mean(1) if a.ndim > 1 else a)
        finally:
            handle.remove()
        return torch.cat(out).double().numpy()


# ----------------------------------------------------------------------------- the user's scores
def check_scores(scores, n_images: int | None = None, min_images: int = MIN_IMAGES) -> np.ndarray:
    """Scores as a float array, or a TargetError naming the problem (NaN, constant, too few, a
    length that does not match the images)."""
    try:
        f = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TargetError(f"Scores must be numbers: {e}") from None
    if n_images is not None and len(f) != n_images:
        raise TargetError(f"{len(f)} scores for {n_images} images: give exactly one score per image")
    if len(f) < min_images:
        raise TargetError(f"Only {len(f)} image(s): explaining a function needs at least {min_images} "
                          f"(half to fit, half to check)")
    bad = ~np.isfinite(f)
    if bad.any():
        raise TargetError(f"{int(bad.sum())} score(s) are NaN or infinite (first at position {int(np.argmax(bad))}); "
                          f"remove those images or give them a number")
    if np.ptp(f) == 0:
        raise TargetError(f"All {len(f)} scores are equal ({f[0]:g}): a constant function has nothing to explain")
    return f


def _readable(path: str | Path, where: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TargetError(f"{where}: no image file at {p}")
    try:
        load_image(p)
    except Exception as e:         # noqa: BLE001  corrupt / not an image: the user's file, say so
        raise TargetError(f"{where}: cannot read {p} as an image ({e})") from None
    return str(p)


def scores_from_csv(path: str | Path, min_images: int = MIN_IMAGES, files: ServerFiles = ServerFiles(),
                    open_images: bool = True) -> tuple[list[str], np.ndarray]:
    """A CSV of image paths and scores (two columns; a header row is optional; relative paths are read
    from the CSV's folder) -> (paths, scores). `files` says which server folders the paths may name.
    open_images=False: the paths only name rows of an embeddings folder (scores_with_embeddings); no
    image is opened, so a million rows cost no image reads."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TargetError(f"No CSV file at {path}")
    try:
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8", errors="replace").splitlines()) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise TargetError(f"{path.name} is not a readable CSV: {e}") from None
    if rows and len(rows[0]) >= 2:
        try:
            float(rows[0][1])
        except ValueError:
            rows = rows[1:]                 # a header
    paths, scores = [], []
    for i, r in enumerate(rows, start=1):
        if len(r) < 2:
            raise TargetError(f"{path.name} line {i}: expected two columns, image path and score; got {r!r}")
        try:
            scores.append(float(r[1]))
        except ValueError:
            raise TargetError(f"{path.name} line {i}: the score {r[1]!r} is not a number") from None
        p = Path(r[0].strip()).expanduser()
        p = files.check(p if p.is_absolute() else path.parent / p, "image")
        paths.append(_readable(p, f"{path.name} line {i}") if open_images else str(p))
    return paths, check_scores(scores, len(paths), min_images)


def scores_with_embeddings(csv_path: str | Path, embeddings_dir: str | Path,
                           files: ServerFiles = ServerFiles()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A CSV of image paths and scores, and the embeddings folder `clip-retrieval inference` (or `clipgpt
    index`) wrote for those images -> (paths, (N, D) embeddings, scores), read from the memory-mapped
    embeddings: f over a million images needs neither the images nor their embeddings in memory at once."""
    from .index import LocalIndex
    paths, f = scores_from_csv(csv_path, files=files, open_images=False)
    folder = files.check(str(embeddings_dir).strip(), "folder")
    if not folder.is_dir():
        raise TargetError(f"No embeddings folder at {folder}")
    return paths, LocalIndex(folder).embeddings_for(paths), f


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _images_in(folder_or_files, what: str, files: ServerFiles = ServerFiles()) -> list[str]:
    """A folder's images (checked against `files`), or a list of image files (uploads)."""
    if isinstance(folder_or_files, (str, Path)):
        folder = files.check(folder_or_files)
        if not folder.is_dir():
            raise TargetError(f"{what}: not a folder: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TargetError(f"{what}: no images in {folder}")
    else:
        files = list(folder_or_files or [])
        if not files:
            raise TargetError(f"{what}: no images given")
    return [_readable(p, what) for p in files]


def scores_from_folders(positives, negatives, min_images: int = MIN_IMAGES,
                        files: ServerFiles = ServerFiles()) -> tuple[list[str], np.ndarray]:
    """A folder (or list of files) of positives against one of negatives -> (paths, 1/0 scores)."""
    pos, neg = _images_in(positives, "Positives", files), _images_in(negatives, "Negatives", files)
    return pos + neg, check_scores([1.0] * len(pos) + [0.0] * len(neg), None, min_images)


# ----------------------------------------------------------------------------- image sets
def world_sample(n: int, seed: int = 0, renderer="ours"):
    """n ShapesWorld images (seeds seed..seed+n-1, all colour-shape pairs: the built-in gallery's first
    n when seed=0) and their scenes. renderer: "ours" (world.render), or a function (scenes, seed) ->
    images that redraws them, such as the benchmarks' independent renderer (benchmarks.alt_render.redraw):
    the core never imports benchmark code."""
    exs = [world.example(seed + i, split="any") for i in range(n)]
    scenes = [e.scene for e in exs]
    if renderer == "ours":
        return [e.image for e in exs], scenes
    if not callable(renderer):
        raise TargetError(f"renderer must be 'ours' or a function (scenes, seed) -> images, got {renderer!r} "
                          f"(for the independent renderer pass benchmarks.alt_render.redraw)")
    return renderer(scenes, seed), scenes
