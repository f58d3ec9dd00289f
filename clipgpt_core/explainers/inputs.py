"""What the Explain tab (and any UI) asks for, in one place: the function to explain and the images it is
read on, for one bundle. The classifier and the gallery sample load at first use, not when a UI is laid out.

    inputs = ExplainInputs(bundle)
    images, emb, f, answer = inputs.function("planted", planted="has_red", n_images=512)
    images, emb, f, answer = inputs.function("csv", csv_file="scores.csv")
"""
from __future__ import annotations

from ..access import ServerFiles
from ..images import load_image
from ..models.classifier_files import classifier_dir
from .errors import TargetError
from .planted import PLANTED, world_sample
from .scores import images_in, scores_from_csv, scores_from_folders, scores_with_embeddings
from .targets import ClassifierTarget

# what f is: the user's words for each kind (the tab's choices, the API's values) -> the kind
KINDS = {"Planted function": "planted", "Classifier output": "classifier", "My scores (CSV)": "csv",
         "Positives vs negatives": "folders"}
IMAGE_SOURCES = {"Built-in gallery sample": "gallery", "My images (folder)": "folder"}
NO_CLASSIFIER = "This bundle has no classifier; train one with `python -m clipgpt_train.classifier`"


def _key(value: str, choices: dict, what: str) -> str:
    if value in choices.values():
        return value
    if value in choices:
        return choices[value]
    raise TargetError(f"{what} must be one of {', '.join(map(repr, choices))}, not {value!r}")


class ExplainInputs:
    """A bundle's functions to explain. `files`: which server folders typed paths (and a CSV's paths) may name."""

    def __init__(self, bundle, files: ServerFiles = ServerFiles()):
        self.bundle, self.files = bundle, files
        self.has_classifier = classifier_dir(bundle) is not None
        self._classifier = None
        self._sample: dict = {}

    def classifier(self):
        """The bundle's classifier, loaded (with torch) at its first use."""
        if not self.has_classifier:
            raise TargetError(NO_CLASSIFIER)
        if self._classifier is None:
            from ..models.classifier import load_classifier
            self._classifier = load_classifier(self.bundle)
        return self._classifier

    def gallery_sample(self, n: int):
        """The built-in gallery's first n images -> (images, scenes, (n, D) embeddings); one sample kept."""
        if not self.bundle.is_shapes_world:
            raise TargetError("This bundle has no built-in ShapesWorld gallery: use your own images")
        if n not in self._sample:
            images, scenes = world_sample(n)
            self._sample = {n: (images, scenes, self.bundle.clip.encode_images(images))}
        return self._sample[n]

    def function(self, kind: str, planted: str | None = None, output: str | None = None, csv_file=None,
                 embeddings_folder: str | None = None, positives=None, negatives=None,
                 image_source: str = "gallery", n_images: int = 512, image_folder: str | None = None):
        """-> (images or their paths, embeddings or None, scores, the known answer or {}). kind: planted,
        classifier, csv or folders (or the tab's words for them); positives/negatives: folders or files."""
        kind = _key(kind, KINDS, "The function to explain")
        if kind == "csv":
            if not csv_file:
                raise TargetError("Upload a CSV of image paths and scores")
            if (embeddings_folder or "").strip():      # rows of an embeddings folder: no image is read
                paths, emb, f = scores_with_embeddings(csv_file, embeddings_folder, files=self.files)
                return paths, emb, f, {}
            paths, f = scores_from_csv(csv_file, files=self.files)
            return [load_image(p) for p in paths], None, f, {}
        if kind == "folders":
            pos = positives if not isinstance(positives, str) else positives.strip()
            neg = negatives if not isinstance(negatives, str) else negatives.strip()
            if not pos or not neg:
                raise TargetError("Give a folder (or files) of positives and one of negatives")
            paths, f = scores_from_folders(pos, neg, files=self.files)
            return [load_image(p) for p in paths], None, f, {}
        if _key(image_source, IMAGE_SOURCES, "The images") == "gallery":
            images, scenes, emb = self.gallery_sample(int(n_images))
        else:
            folder = (image_folder or "").strip()
            if not folder:
                raise TargetError("Type the folder of your images")
            images, scenes, emb = [load_image(p) for p in images_in(folder, "Images", self.files)], None, None
        if kind == "planted":
            if planted not in PLANTED:
                raise TargetError("Pick a planted function")
            return images, emb, PLANTED[planted].score(scenes, images), PLANTED[planted].answer
        target = ClassifierTarget(self.classifier(), output or "")
        return images, emb, target.score(images), target.answer

    def layer(self, layer: str, n_images: int):
        """The classifier's layer ("" = its logits) on the gallery sample -> (images, embeddings, (n, units)
        activations, unit names)."""
        from .layer import layer_activations
        if not self.bundle.is_shapes_world:
            raise TargetError("The layer job explains the classifier on the built-in gallery sample")
        model = self.classifier()
        images, _, emb = self.gallery_sample(int(n_images))
        acts = layer_activations(model, layer, images)
        names = ([o for o in ClassifierTarget.outputs(model) if not o.startswith("unit")] if layer == ""
                 else [f"{layer} {i}" for i in range(acts.shape[1])])
        return images, emb, acts, names

    def units(self, model_file, layer: str = "", units: str | list | None = None, pool: str = "mean",
              n_images: int = 512, image_folder: str | None = None):
        """An uploaded model file's units (explainers.units: .pt2 or TorchScript) on
        the gallery sample, or on a folder of images -> LayerTable. units: "0,5,7" or a list; empty: all."""
        from .units import explain_units, load_vision_model
        if not model_file:
            raise TargetError("Upload a model file: a torch.export program (.pt2) or a TorchScript file")
        if isinstance(units, str):
            try:
                units = [int(u) for u in units.replace(" ", "").split(",") if u] or None
            except ValueError:
                raise TargetError(f"Units are indices such as 0,5,7, not {units!r}") from None
        folder = (image_folder or "").strip()
        if folder:
            images = [load_image(p) for p in images_in(folder, "Images", self.files)]
            emb = None
        else:
            images, _, emb = self.gallery_sample(int(n_images))
        model = load_vision_model(model_file)
        return explain_units(self.bundle, model, (layer or "").strip(), images, units=units, pool=pool,
                             embeddings=emb)
