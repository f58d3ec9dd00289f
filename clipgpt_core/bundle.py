"""Model bundles: a directory with a JSON manifest naming its components.

    assets/shapes/
      manifest.json                 {"name", "format_version", "components": {...}, "gallery": {...}}
      clip/open_clip_config.json    open_clip's layout: model_name, model_cfg, preprocess_cfg
      clip/open_clip_model.safetensors

`load_bundle()` gives the built-in "shapes" bundle, offline. `load_bundle("path/to/dir")` loads
any saved bundle. `load_bundle("open_clip:ViT-B-32/laion2b_s34b_b79k")` builds a bundle around a
pretrained open_clip model from the local hub cache (a clear error if it is not there);
the tag "random-init" gives the same architecture with random weights, for tests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .clip_model import ClipEncoder, create_clip, load_clip

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

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, clip={self.clip.model_name}, path={self.path})"


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
    return Bundle(manifest.get("name", path.name), clip, path, manifest.get("gallery"), manifest)


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
    return Bundle(f"open_clip:{spec}", clip, None, None, {"components": {"clip": {"kind": "open_clip"}}})


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write every component as safetensors + JSON config, and the manifest."""
    directory = Path(directory)
    bundle.clip.save(directory / "clip")
    manifest = dict(bundle.manifest) | {
        "name": bundle.name, "format_version": FORMAT_VERSION,
        "components": dict(bundle.manifest.get("components", {})) | {"clip": {"kind": "open_clip", "path": "clip"}},
    }
    if bundle.gallery:
        manifest["gallery"] = bundle.gallery
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory
