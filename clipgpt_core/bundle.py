"""Model bundles: a directory with a JSON manifest naming its components.

    assets/shapes/
      manifest.json                 {"name", "format_version", "components": {...}, "gallery": {...}}
      clip/open_clip_config.json    open_clip's layout: model_name, model_cfg, preprocess_cfg
      clip/open_clip_model.safetensors
      prior/prior_config.json + model.safetensors                  the caption prior (CLIP GPT)
      captioner/mapper_config.json + mapper.safetensors            ClipCap mapper
      embedding_prior/embedding_prior_config.json + ...safetensors caption -> image embedding

`load_bundle()` gives the built-in "shapes" bundle, offline. `load_bundle("path/to/dir")` loads
any saved bundle. `load_bundle("open_clip:ViT-B-32/laion2b_s34b_b79k")` builds a bundle around a
pretrained open_clip model from the local hub cache (a clear error if it is not there);
the tag "random-init" gives the same architecture with random weights, for tests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .captioner import Captioner, PrefixMapper
from .clip_model import ClipEncoder, create_clip, load_clip
from .embedding_prior import EmbeddingPrior
from .prior import CaptionPrior

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUILTIN = {"shapes": ASSETS / "shapes"}
FORMAT_VERSION = 1
RANDOM_INIT = "random-init"


class BundleError(RuntimeError):
    """A bundle that cannot be loaded; the message says what is wrong and what to do."""


@dataclass
class Bundle:
    name: str
    clip: ClipEncoder
    path: Path | None = None                       # None for bundles built from a spec
    gallery: dict | None = None                    # how to build its built-in gallery, if any
    manifest: dict = field(default_factory=dict)
    prior: CaptionPrior | None = None
    captioner: Captioner | None = None
    embedding_prior: EmbeddingPrior | None = None

    def __repr__(self) -> str:
        parts = [n for n in ("prior", "captioner", "embedding_prior") if getattr(self, n) is not None]
        return f"Bundle({self.name!r}, clip={self.clip.model_name}, path={self.path}, with={parts})"


def load_bundle(name_or_path: str | Path | None = None, device: str = "cpu") -> Bundle:
    spec = str(name_or_path) if name_or_path is not None else "shapes"
    if spec.startswith("open_clip:"):
        return _pretrained_bundle(spec[len("open_clip:"):], device)
    path = BUILTIN.get(spec, Path(spec).expanduser())
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        known = ", ".join(BUILTIN)
        raise BundleError(f"No bundle at {path} (no manifest.json). Use a built-in name ({known}), "
                          f"a bundle directory, or open_clip:ARCH/TAG.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(f"{path} uses bundle format {manifest['format_version']}; this CLIP GPT "
                          f"reads up to {FORMAT_VERSION}. Upgrade CLIP GPT.")
    components = manifest.get("components", {})
    if "clip" not in components:
        raise BundleError(f"{manifest_path} names no 'clip' component")
    clip_dir = path / components["clip"]["path"]
    try:
        clip = load_clip(clip_dir, device=device)
    except FileNotFoundError as e:
        raise BundleError(f"Bundle {path} is incomplete: {e}. Retrain it with "
                          f"`python -m clipgpt_core.train_clip --out {clip_dir}`.") from e
    bundle = Bundle(manifest.get("name", path.name), clip, path, manifest.get("gallery"), manifest)
    _load_text_components(bundle, components, device)
    return bundle


# component name -> how to retrain it, for the error when its files are missing
RETRAIN = {"prior": "train_prior", "captioner": "train_captioner", "embedding_prior": "train_embedding_prior"}


def _load_text_components(bundle: Bundle, components: dict, device: str) -> None:
    """The prior, captioner and embedding prior, when the manifest names them. Without a trained
    prior the bundle still gets one made from its CLIP text tower (untrained head), and without a
    mapper a training-free captioner, so every tab runs on every bundle."""
    def directory(name):
        return bundle.path / components[name]["path"] if name in components else None
    try:
        if directory("prior"):
            bundle.prior = CaptionPrior.load(directory("prior"), device)
        else:
            bundle.prior = CaptionPrior.from_clip(bundle.clip)
        mapper = PrefixMapper.load(directory("captioner")).to(device) if directory("captioner") else None
        bundle.captioner = Captioner(bundle.clip, bundle.prior, mapper)
        if directory("embedding_prior"):
            bundle.embedding_prior = EmbeddingPrior.load(bundle.clip, directory("embedding_prior"))
    except FileNotFoundError as e:
        name = next((n for n in RETRAIN if directory(n) and str(directory(n)) in str(e)), "prior")
        raise BundleError(f"Bundle {bundle.path} is incomplete: {e}. Retrain the {name} with "
                          f"`python -m clipgpt_core.{RETRAIN[name]} --out {directory(name)}`.") from e


def _pretrained_bundle(spec: str, device: str) -> Bundle:
    arch, _, tag = spec.partition("/")
    if not arch:
        raise BundleError("Write a pretrained bundle as open_clip:ARCH/TAG, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k")
    import open_clip
    if arch not in open_clip.list_models():
        raise BundleError(f"open_clip has no architecture {arch!r}")
    pretrained = None if tag in ("", RANDOM_INIT) else tag
    if tag == "":
        raise BundleError(f"Name the weights: open_clip:{arch}/TAG with TAG one of "
                          f"{', '.join(open_clip.list_pretrained_tags_by_model(arch))} "
                          f"(or {RANDOM_INIT} for untrained weights)")
    clip = create_clip(arch, pretrained=pretrained, device=device)
    prior = CaptionPrior.from_clip(clip)
    return Bundle(f"open_clip:{spec}", clip, None, None, {"components": {"clip": {"kind": "open_clip"}}},
                  prior=prior, captioner=Captioner(clip, prior))


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write every component as safetensors + JSON config, and the manifest."""
    directory = Path(directory)
    bundle.clip.save(directory / "clip")
    components = dict(bundle.manifest.get("components", {})) | {"clip": {"kind": "open_clip", "path": "clip"}}
    saved = {"prior": (bundle.prior, "caption_prior"), "embedding_prior": (bundle.embedding_prior, "embedding_prior"),
             "captioner": (bundle.captioner and bundle.captioner.mapper, "clipcap_mapper")}
    for name, (component, kind) in saved.items():
        if component is not None:
            component.save(directory / name)
            components[name] = {"kind": kind, "path": name}
    manifest = dict(bundle.manifest) | {"name": bundle.name, "format_version": FORMAT_VERSION,
                                        "components": components}
    if bundle.gallery:
        manifest["gallery"] = bundle.gallery
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory
