"""Model bundles: a directory with a JSON manifest naming its components.

    assets/shapes/
      manifest.json                 {"name", "format_version", "components": {...}, "gallery": {...}}
      clip/open_clip_config.json + open_clip_model.safetensors     open_clip's layout
      prior/prior_config.json + model.safetensors                  the caption prior (CLIP GPT)
      captioner/, clip_gpt/, embedding_prior/, layout_head/        each a JSON config + safetensors
      ranking_clip/                 a second CLIP (open_clip's layout) that only ranks the captioners' captions
      */trained_against.json        what the component was trained against (fingerprints), see LINEAGE
      renderer/model_index.json + unet/ vae/ scheduler/   a diffusers StableDiffusionPipeline
                                    (save_pretrained), text -> image; its text_encoder/ and tokenizer/
                                    are the bundle's CLIP text tower (hf_text), so they are not stored twice

`load_bundle()` gives the built-in "shapes" bundle, offline. `load_bundle("path/to/dir")` loads
any saved bundle. `load_bundle("open_clip:ViT-B-32/laion2b_s34b_b79k")` builds a bundle around a
pretrained open_clip model from the local hub cache (a clear error if it is not there);
the tag "random-init" gives the same architecture with random weights, for tests.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BundleError
from .paths import ASSETS

if TYPE_CHECKING:   # the components import torch, open_clip and diffusers: loaded with a bundle, not before
    from .models.captioner import Captioner
    from .models.clip import ClipEncoder
    from .models.embedding_prior import EmbeddingPrior
    from .models.caption_prior import CaptionPrior
    from .models.clip_gpt import ClipGPT
    from .models.renderer import Renderer

BUILTIN = {"shapes": ASSETS / "shapes"}
FORMAT_VERSION = 1
RANDOM_INIT = "random-init"
PUBLISHED = "published"       # the seeds' published set, as `clipgpt bundle --published` assembles it


class SpeaksWorld:
    """The one test of "is this a ShapesWorld bundle?": its gallery is the world's. Such a bundle's models
    speak the world's caption language, so Explain's partial descriptions, the world's concept list and
    the captioner's word edits apply to it."""
    gallery: dict | None

    @property
    def is_shapes_world(self) -> bool:
        return (self.gallery or {}).get("kind") == "shapesworld"


@dataclass
class Bundle(SpeaksWorld):
    name: str
    clip: ClipEncoder
    path: Path | None = None                       # None for bundles built from a spec
    gallery: dict | None = None                    # how to build its built-in gallery, if any
    manifest: dict = field(default_factory=dict)
    prior: CaptionPrior | None = None
    captioner: Captioner | None = None
    # more captioners by name (a published bundle: ClipCap COCO and Conceptual); "captioner" is the default
    captioners: dict = field(default_factory=dict)
    clips: dict = field(default_factory=dict)      # other CLIPs the bundle's parts read (ClipCap reads ViT-B/32)
    embedding_prior: EmbeddingPrior | None = None
    clip_gpt: ClipGPT | None = None                # seed 002's one model: image vectors and words in, either out
    ranking_clip: ClipEncoder | None = None        # a CLIP that only ranks its captioners' captions of images
    # how to load the renderer on first use (a pipeline takes seconds to load and imports diffusers)
    renderer_loader: Callable[[], Renderer] | None = field(default=None, repr=False)
    _renderer: Renderer | None = field(default=None, repr=False)

    @property
    def renderer(self) -> Renderer | None:
        """The text-to-image pipeline (clipgpt_core.models.renderer.Renderer), None if the bundle has none.
        Loaded on first use; for an open_clip: bundle that is Stable Diffusion from the local hub
        cache, and when it is not there a RenderError says how to get it."""
        if self._renderer is None and self.renderer_loader is not None:
            self._renderer = self.renderer_loader()
        return self._renderer

    @renderer.setter
    def renderer(self, value: Renderer | None) -> None:
        self._renderer = value

    def has_renderer(self) -> bool:
        """Without loading it: does the bundle have a renderer (its own, or Stable Diffusion to try)?"""
        return self.renderer_loader is not None or self._renderer is not None

    @property
    def clip_name(self) -> str:
        return self.clip.model_name

    def __repr__(self) -> str:
        parts = [n for n in ("prior", "captioner", "embedding_prior", "clip_gpt") if getattr(self, n) is not None]
        parts += ["renderer"] if self.has_renderer() else []
        return f"Bundle({self.name!r}, clip={self.clip.model_name}, path={self.path}, with={parts})"


# What each component reads of the others. A component trained against other weights than the
# bundle now holds is stale: a captioner reads CLIP image embeddings and decodes with the prior's
# blocks; the embedding prior maps CLIP text to CLIP image embeddings; the prior (initialised from
# the text tower) and the renderer (conditioned on its hidden states) read only the text tower.
DEPENDS_ON = {"prior": ("clip_text",), "captioner": ("clip", "prior"), "embedding_prior": ("clip",),
              "renderer": ("clip_text",), "clip_gpt": ("clip", "prior"), "layout_head": ("clip",)}
LINEAGE_FILE = "trained_against.json"
RETRAIN_ALL = "python -m clipgpt_train.bundle"


def dependency_fingerprints(path: Path, components: dict, clip: ClipEncoder) -> dict[str, str]:
    """The fingerprints a component can depend on, as the bundle at `path` holds them now."""
    found = {"clip": clip.fingerprint(), "clip_text": clip.fingerprint("text")}
    if "prior" in components:
        h = hashlib.sha256()
        for f in sorted((path / components["prior"]["path"]).glob("*.safetensors")):
            h.update(f.read_bytes())
        found["prior"] = h.hexdigest()[:12]
    return found


def write_lineage(directory: str | Path, name: str, fingerprints: dict[str, str], **extra) -> None:
    """Record what component `name`, saved in `directory`, was trained against."""
    record = {dep: fingerprints[dep] for dep in DEPENDS_ON.get(name, ())} | extra
    (Path(directory) / LINEAGE_FILE).write_text(json.dumps(record, indent=2))


def stale_components(path: Path, components: dict, clip: ClipEncoder) -> dict[str, str]:
    """component -> why it no longer matches what it depends on (components without a lineage
    file, from bundles written before lineage existed, are trusted)."""
    now = dependency_fingerprints(path, components, clip)
    stale = {}
    for name in DEPENDS_ON:
        if name in components and "path" in components[name]:                 # a Hub renderer has none
            why = lineage_mismatch(path / components[name]["path"], name, now)
            if why:
                stale[name] = why
    return stale


def lineage_mismatch(directory: str | Path, name: str, now: dict[str, str]) -> str | None:
    """Why component `name`, saved in `directory`, does not match the fingerprints `now` of what it depends on
    (None when it does, or when it has no lineage file)."""
    record_file = Path(directory) / LINEAGE_FILE
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    for dep in DEPENDS_ON.get(name, ()):
        if dep in record and record[dep] != now.get(dep):
            return f"{name} was trained against {dep} {record[dep]}, the bundle's {dep} is {now.get(dep)}"
    return None


def read_manifest(name_or_path: str | Path | None = None) -> tuple[Path, dict]:
    """A bundle directory's (path, manifest), checked; no model is loaded."""
    spec = str(name_or_path) if name_or_path is not None else "shapes"
    if spec == PUBLISHED:
        from .published.assemble import default_published_dir
        path = default_published_dir()
        if not (path / "manifest.json").is_file():
            raise BundleError(f"The published bundle is not assembled yet (no {path}). Run `clipgpt bundle --published` "
                              f"(it downloads what is missing when online, and names what to fetch when not).")
    else:
        path = BUILTIN.get(spec, Path(spec).expanduser())
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        known = ", ".join([*BUILTIN, PUBLISHED])
        raise BundleError(f"No bundle at {path} (no manifest.json). Use a built-in name ({known}), "
                          f"a bundle directory, or open_clip:ARCH/TAG.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(f"{path} uses bundle format {manifest['format_version']}; this CLIP GPT "
                          f"reads up to {FORMAT_VERSION}. Upgrade CLIP GPT.")
    if "clip" not in manifest.get("components", {}):
        raise BundleError(f"{manifest_path} names no 'clip' component")
    return path, manifest


def load_bundle(name_or_path: str | Path | None = None, device: str = "cpu", strict: bool = True) -> Bundle:
    """strict=False leaves out stale components, and those with no folder yet (with a log line), instead of refusing
    the bundle: the retraining commands use it to read a half-retrained bundle."""
    if str(name_or_path).startswith("open_clip:"):
        return _pretrained_bundle(str(name_or_path)[len("open_clip:"):], device)
    from .models.clip import load_clip
    from .models.renderer import Renderer
    path, manifest = read_manifest(name_or_path)
    components = manifest.get("components", {})
    clip_dir = path / components["clip"]["path"]
    try:
        clip = load_clip(clip_dir, device=device)
    except FileNotFoundError as e:
        raise BundleError(f"Bundle {path} is incomplete: {e}. Retrain it with "
                          f"`python -m clipgpt_train.clip --out {clip_dir}`.") from e
    stale = stale_components(path, components, clip)
    if stale and strict:
        raise BundleError(f"Bundle {path} mixes components trained against different models: "
                          f"{'; '.join(stale.values())}. Retrain the stale ones with `{RETRAIN_ALL} --out {path}` "
                          f"(it retrains only what is stale, in dependency order).")
    if not strict:   # a bundle being trained from nothing: what has no folder yet is not trained yet
        stale |= {k: "not trained yet" for k, v in components.items()
                  if k != "clip" and "path" in v and not (path / v["path"]).exists()}
    for name, why in stale.items():
        logging.warning("leaving out the stale %s of %s: %s", name, path, why)
    components = {k: v for k, v in components.items() if k not in stale}
    bundle = Bundle(manifest.get("name", path.name), clip, path, manifest.get("gallery"), manifest)
    _load_text_components(bundle, components, device)
    if components.get("renderer", {}).get("kind") == "diffusers_hub":
        # a Hub pipeline (SD 1.5): fetched into the Hugging Face cache on first use, never copied into the bundle
        entry = components["renderer"]
        bundle.renderer_loader = functools.partial(_hub_renderer, entry["repo"], entry.get("files", ()), device,
                                                   bundle.captioner, bundle.embedding_prior, entry.get("fast"))
    elif "renderer" in components:
        renderer_dir = path / components["renderer"]["path"]
        if not (renderer_dir / "model_index.json").is_file():
            raise BundleError(f"Bundle {path} is incomplete: no diffusers pipeline (model_index.json) in "
                              f"{renderer_dir}. Retrain the renderer with "
                              f"`python -m clipgpt_train.renderer --out {renderer_dir}`.")
        # images as prompts read CLIP image vectors with this bundle's captioner and embedding prior
        bundle.renderer_loader = functools.partial(Renderer.load, renderer_dir, device, clip, bundle.captioner,
                                                   bundle.embedding_prior)
        if fast := components["renderer"].get("fast"):    # few-step (models/fast_sd): LCM-LoRA fused, TAESD
            from .models.fast_sd import from_manifest
            bundle.renderer_loader = lambda load=bundle.renderer_loader: from_manifest(load(), fast, path)
    return bundle


def captioner_choices(manifest: dict) -> list[tuple[str, str]]:
    """(label, key in Bundle.captioners) for each captioner a manifest names, the default first; read without
    loading (a UI lays itself out from it). A published bundle: ClipCap's COCO and Conceptual Captions models."""
    components = manifest.get("components", {})
    named = {"captioner": components["captioner"]} if "captioner" in components else {}
    named |= manifest.get("captioners", {})
    choices = [(Path(entry.get("path", key)).name if len(named) > 1 else key, key) for key, entry in named.items()]
    if "clip_gpt" in components:      # CLIP-GPT captions an image too (its image -> caption path); alone, the default
        choices.append(("CLIP-GPT", "clip_gpt"))
    return choices


def _hub_renderer(repo: str, files, device: str, captioner, embedding_prior, fast: dict | None = None) -> Renderer:
    from .models.renderer import Renderer
    from .published.fetch import hub_files
    renderer = Renderer.load(hub_files(repo, list(files)), device, captioner=captioner, embedding_prior=embedding_prior)
    if fast:        # few-step (models/fast_sd): the manifest's LCM-LoRA fused into the UNet, TAESD as the VAE
        from .models.fast_sd import from_manifest
        renderer = from_manifest(renderer, fast)
    return renderer


class LoadingBundle(SpeaksWorld):
    """A bundle directory loading in a background thread, for an app that should answer before its models
    are in memory (torch, open_clip and the weights take seconds). What a UI is laid out from is here at
    once: name, path, manifest, gallery, has_renderer(), clip_name. Any other attribute (clip, prior,
    captioner, renderer, ...) waits for the load and is the loaded Bundle's; a failed load raises its
    BundleError there, to every caller. The load starts on start() or on the first such attribute."""

    def __init__(self, name_or_path: str | Path | None = None, device: str = "cpu"):
        self.path, self.manifest = read_manifest(name_or_path)
        self.name = self.manifest.get("name", self.path.name)
        self.gallery = self.manifest.get("gallery")
        self._spec, self._device = name_or_path, device
        self._loaded: Future = Future()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "LoadingBundle":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="load-bundle", daemon=True)
                self._thread.start()
        return self

    def _load(self) -> None:
        try:
            self._loaded.set_result(load_bundle(self._spec, self._device))
        except BaseException as e:       # handed to every caller of get(), and said once here
            logging.error("loading bundle %s failed: %s", self.path, e)
            self._loaded.set_exception(e)

    def get(self) -> Bundle:
        """The loaded bundle (waits for the load)."""
        return self.start()._loaded.result()

    def __getattr__(self, name: str):
        if name.startswith("_"):        # not yet set in __init__, or private: never the bundle's
            raise AttributeError(name)
        return getattr(self.get(), name)

    def has_renderer(self) -> bool:
        return "renderer" in self.manifest.get("components", {})

    @property
    def clip_name(self) -> str:
        config = self.path / self.manifest["components"]["clip"]["path"] / "open_clip_config.json"
        try:
            return json.loads(config.read_text())["model_name"]
        except (OSError, ValueError, KeyError):
            return self.get().clip_name

    def __repr__(self) -> str:
        state = "loaded" if self._loaded.done() else "loading" if self._thread else "not loaded"
        return f"LoadingBundle({self.name!r}, path={self.path}, {state})"


# component name -> how to retrain it, for the error when its files are missing
RETRAIN = {name: f"clipgpt_train.{name}" for name in ("prior", "captioner", "embedding_prior", "renderer", "clip_gpt",
                                                      "layout_head", "ranking_clip")}


def _load_text_components(bundle: Bundle, components: dict, device: str) -> None:
    """The prior, captioner, embedding prior and CLIP-GPT, when the manifest names them. Without a trained
    prior the bundle still gets one made from its CLIP text tower (untrained head), and without a
    mapper a training-free captioner, so every tab runs on every bundle."""
    from .models.captioner import Captioner
    from .world.captions import WORD_GROUPS
    from .models.embedding_prior import EmbeddingPrior
    from .models.caption_prior import CaptionPrior

    def directory(name):
        return bundle.path / components[name]["path"] if name in components else None
    try:
        if directory("prior"):
            bundle.prior = CaptionPrior.load(directory("prior"), device)
        else:
            bundle.prior = CaptionPrior.from_clip(bundle.clip)
        # ShapesWorld captions have a known vocabulary: let the captioner try one-word edits
        edits = WORD_GROUPS if bundle.is_shapes_world else None
        named = {"captioner": components["captioner"]} if "captioner" in components else {}
        named |= bundle.manifest.get("captioners", {})
        for key, entry in named.items():
            bundle.captioners[key] = _load_captioner(bundle, entry, device, edits)
        if directory("embedding_prior"):
            bundle.embedding_prior = EmbeddingPrior.load(bundle.clip, directory("embedding_prior"))
        if directory("clip_gpt"):
            from .models.clip_gpt import ClipGPT
            bundle.clip_gpt = ClipGPT.load(directory("clip_gpt"), bundle.clip, bundle.prior, device)
            bundle.captioners["clip_gpt"] = bundle.clip_gpt.captioner
        if directory("ranking_clip"):     # trained on crowded scenes, it binds sizes the bundle's CLIP confuses
            from .models.clip import load_clip
            bundle.ranking_clip = load_clip(directory("ranking_clip"), device=device)
            for captioner in bundle.captioners.values():
                captioner.ranking_clips = [bundle.ranking_clip]
        # the default captioner: a captioner component; else CLIP-GPT's image -> caption path (the built-in bundle:
        # one model where there were two); else a training-free one
        bundle.captioner = (bundle.captioners.get("captioner") or bundle.captioners.get("clip_gpt")
                            or Captioner(bundle.clip, bundle.prior, edit_groups=edits))
    except FileNotFoundError as e:
        name = next((n for n in RETRAIN if directory(n) and str(directory(n)) in str(e)), "prior")
        raise BundleError(f"Bundle {bundle.path} is incomplete: {e}. Retrain the {name} with "
                          f"`python -m {RETRAIN[name]} --out {directory(name)}`.") from e


def _load_captioner(bundle: Bundle, entry: dict, device: str, edits) -> Captioner:
    """A captioner component with the CLIP it reads: the bundle's, or one named in the manifest's "clips"."""
    from .models.captioner import Captioner
    from .models.clip import load_clip
    directory = bundle.path / entry["path"]
    clip = bundle.clip
    if entry.get("clip"):
        if entry["clip"] not in bundle.clips:
            clips = bundle.manifest.get("clips", {})
            if entry["clip"] not in clips:
                raise BundleError(f"{bundle.path}: the captioner {entry['path']} reads CLIP {entry['clip']!r}, which "
                                  f"the manifest's \"clips\" does not hold")
            bundle.clips[entry["clip"]] = load_clip(bundle.path / clips[entry["clip"]]["path"], device=device)
        clip = bundle.clips[entry["clip"]]
    if entry.get("kind") == "clipcap_gpt2":
        from .published.clipcap import load_clipcap
        return load_clipcap(directory, clip, bundle.prior, device)
    return Captioner.load(clip, bundle.prior, directory, device, edit_groups=edits)


def _pretrained_bundle(spec: str, device: str) -> Bundle:
    arch, _, tag = spec.partition("/")
    if not arch:
        raise BundleError("Write a pretrained bundle as open_clip:ARCH/TAG, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k")
    import open_clip
    from .models.captioner import Captioner
    from .models.clip import create_clip
    from .models.caption_prior import CaptionPrior
    from .models.renderer import Renderer
    if arch not in open_clip.list_models():
        raise BundleError(f"open_clip has no architecture {arch!r}")
    pretrained = None if tag in ("", RANDOM_INIT) else tag
    if tag == "":
        raise BundleError(f"Name the weights: open_clip:{arch}/TAG with TAG one of "
                          f"{', '.join(open_clip.list_pretrained_tags_by_model(arch))} "
                          f"(or {RANDOM_INIT} for untrained weights)")
    clip = create_clip(arch, pretrained=pretrained, device=device)
    prior = CaptionPrior.from_clip(clip)
    # the Render tab drives Stable Diffusion 1.5 from the local hub cache (whose text encoder is OpenAI
    # CLIP ViT-L/14, whatever this bundle's CLIP is); tried when first used
    captioner = Captioner(clip, prior)
    return Bundle(f"open_clip:{spec}", clip, None, None, {"components": {"clip": {"kind": "open_clip"}}},
                  prior=prior, captioner=captioner,
                  renderer_loader=functools.partial(Renderer.pretrained, device=device, captioner=captioner))


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write every component as safetensors + JSON config, and the manifest."""
    components = bundle.manifest.get("components", {})
    if (bundle.clips or bundle.manifest.get("captioners") or components.get("renderer", {}).get("kind") == "diffusers_hub"
            or (bundle.captioner is not None and bundle.captioner.config is not None)):
        # published pieces (a ClipCap's GPT-2, a second CLIP, SD 1.5 named by its Hub id, a fused few-step UNet) are
        # not the project's components: writing them as such would lose what they are
        raise BundleError(f"{bundle.name} holds published pieces, which `clipgpt bundle` assembles (copy its folder, "
                          f"{bundle.path}, to keep it elsewhere); save_bundle writes bundles of the project's own components")
    directory = Path(directory)
    bundle.clip.save(directory / "clip")
    components = dict(bundle.manifest.get("components", {})) | {"clip": {"kind": "open_clip", "path": "clip"}}
    saved = {"prior": (bundle.prior, "caption_prior"), "embedding_prior": (bundle.embedding_prior, "embedding_prior"),
             "captioner": (bundle.captioner if bundle.captioner and bundle.captioner.mapper and not (
                 bundle.clip_gpt is not None and bundle.captioner is bundle.clip_gpt.captioner) else None,
                           "clipcap_mapper"), "clip_gpt": (bundle.clip_gpt, "clip_gpt")}
    for name, (component, kind) in saved.items():
        if component is not None:
            component.save(directory / name)
            components[name] = {"kind": kind, "path": name}
    # the bundle's own renderer is saved (loading it if unused); Stable Diffusion from the hub cache
    # (an open_clip: bundle's) is not copied into the bundle
    renderer = bundle.renderer if (bundle._renderer is not None or "renderer" in components) else None
    components.pop("renderer", None)
    own_text_encoder = False
    if renderer is not None and not renderer.from_hub:
        # the bundle's CLIP text tower is kept once: the renderer folder leaves it out when it is the same
        own_text_encoder = not renderer.text_encoder_is(bundle.clip)
        renderer.save(directory / "renderer", with_text_encoder=own_text_encoder)
        components["renderer"] = {"kind": "diffusers_stable_diffusion", "path": "renderer"}
    for name in ("layout_head", "ranking_clip"):      # the renderer's vector decoder, the ranking CLIP: as they were
        entry = components.pop(name, None)
        if entry is not None and bundle.path is not None and (bundle.path / entry["path"]).is_dir():
            import shutil
            shutil.copytree(bundle.path / entry["path"], directory / name, dirs_exist_ok=True)
            components[name] = {"kind": entry["kind"], "path": name}
    fingerprints = dependency_fingerprints(directory, components, bundle.clip)
    for name in DEPENDS_ON:
        if name in components and (directory / components[name]["path"]).is_dir() and not (
                name == "renderer" and own_text_encoder):
            write_lineage(directory / components[name]["path"], name, fingerprints)
    manifest = dict(bundle.manifest) | {"name": bundle.name, "format_version": FORMAT_VERSION,
                                        "components": components}
    if bundle.gallery:
        manifest["gallery"] = bundle.gallery
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory
