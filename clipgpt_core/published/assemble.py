"""`clipgpt bundle`: a bundle from published pieces — a CLIP, a caption prior, captioners, a renderer.

    clipgpt bundle --clip open_clip:ViT-L-14/openai --prior clip_gpt.pt --captioner clipcap_coco/ --out my_bundle
    clipgpt bundle --published                     # the seeds' set, downloaded when missing, into CLIPGPT_CACHE
    python app.py --bundle published               # (or --bundle my_bundle) every tab on it

A CLIP SPEC is `open_clip:ARCH/TAG`, `hf-hub:ORG/NAME` (a repo in open_clip's Hub layout), or a local folder in
that layout (open_clip_config.json + open_clip_model.safetensors). A prior is a prior folder or a clip_gpt.pt
(converted here). A captioner is a converted ClipCap folder; it names the CLIP it reads, and when that is not the
bundle's CLIP the bundle holds that one too (manifest "clips"). A renderer is a diffusers folder (copied in) or a
Hub id (named in the manifest, fetched on first use). Large files are hard-linked where the file system allows.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import ClipGPTError, InputError
from . import fetch
from .sources import SD15_FILES, SOURCES

CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")
PUBLISHED = "published"
FAST_PUBLISHED = True      # --published draws few-step (models/fast_sd): ~15 s an image on 2 cores, not ~6 min
                           # (benchmarks/results/real.json); --no-fast for the 50-step pipeline


def default_published_dir() -> Path:
    return fetch.cache_root() / "bundle"


def _copy(src: Path, dst: Path) -> None:
    """A file or folder, hard-linked where possible (a 1.7 GB CLIP is not copied twice on one disk)."""
    def link_or_copy(a, b):
        try:      # the Hugging Face cache's files are symlinks into blobs/: link the blob, not the symlink
            os.link(os.path.realpath(a), b)
        except OSError:
            shutil.copy2(a, b)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link_or_copy, symlinks=False)
    else:
        link_or_copy(src, dst)


def open_clip_name(arch: str, tag: str) -> str:
    """OpenAI's weights need QuickGELU, which open_clip applies for tag 'openai' only: a saved folder names the
    -quickgelu architecture so that loading it from a file builds the same network."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    quick = f"{arch}-quickgelu"
    return quick if cfg.get("quick_gelu") and quick in open_clip.list_models() else arch


def resolve_clip(spec: str, out: Path) -> str:
    """Write the CLIP named by spec into `out` in open_clip's layout (with the model_name load_clip reads);
    -> its open_clip name."""
    import open_clip
    if spec.startswith("open_clip:"):
        arch, _, tag = spec[len("open_clip:"):].partition("/")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg or not cfg.get("hf_hub"):
            raise InputError(f"open_clip has no Hub weights for {arch}/{tag}; known tags: "
                             f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}")
        repo = cfg["hf_hub"].rstrip("/")
        folder = fetch.hub_files(repo, list(CLIP_FILES))
        name = open_clip_name(arch, tag)
        model_cfg = json.loads((folder / CLIP_FILES[0]).read_text()).get("model_cfg") or open_clip.get_model_config(name)
        model_cfg = {**model_cfg, "quick_gelu": True} if cfg.get("quick_gelu") else model_cfg
        if model_cfg != open_clip.get_model_config(name):     # the repo's own architecture: name it after the repo
            name = repo.split("/")[-1]
        config = {"model_name": name, "model_cfg": model_cfg,
                  "preprocess_cfg": {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}}
    else:
        if spec.startswith("hf-hub:"):
            folder = fetch.hub_files(spec[len("hf-hub:"):], list(CLIP_FILES))
        else:
            folder = Path(spec).expanduser()
        missing = [f for f in CLIP_FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"{spec}: expected a CLIP in open_clip's Hub layout ({' + '.join(CLIP_FILES)}); "
                             f"{', '.join(missing)} not found in {folder}")
        config = json.loads((folder / CLIP_FILES[0]).read_text())
        if "model_cfg" not in config:
            raise InputError(f"{folder / CLIP_FILES[0]} has no model_cfg: not an open_clip config")
        # the Hub's open_clip configs carry no name: name the architecture after its repo or folder
        config.setdefault("model_name", spec.rstrip("/").split("/")[-1].split(":")[-1])
    out.mkdir(parents=True, exist_ok=True)
    _copy(folder / "open_clip_model.safetensors", out / "open_clip_model.safetensors")
    (out / CLIP_FILES[0]).write_text(json.dumps(config, indent=2))
    return config["model_name"]


def _resolve_prior(src: str, out: Path) -> None:
    from .clip_gpt import convert_clip_gpt
    path = Path(src).expanduser()
    if path.is_dir():
        if not (path / "prior_config.json").is_file():
            raise InputError(f"{path} is not a prior folder (no prior_config.json); give a prior folder or clip_gpt.pt")
        _copy(path, out)
    else:
        convert_clip_gpt(path, out)


def _captioner_clip(folder: Path) -> str | None:
    config = folder / "captioner_config.json"
    return json.loads(config.read_text()).get("clip") if config.is_file() else None


def assemble(out: str | Path, clip: str | None = None, prior: str | None = None, captioners: list[str] = (),
             renderer: str | None = None, name: str | None = None, fast: bool = False) -> Path:
    """Write a bundle folder from the pieces given; any may be left out but the CLIP, which defaults to the one
    the first captioner reads. fast: the renderer draws few-step (the LCM-LoRA fused, TAESD; models/fast_sd)."""
    out = Path(out).expanduser()
    folders = [Path(c).expanduser() for c in captioners]
    for f in folders:
        if not (f / "captioner_config.json").is_file() and not (f / "mapper_config.json").is_file():
            raise InputError(f"{f} is not a captioner folder (`clipgpt convert clipcap` writes one)")
    clip = clip or next((f"open_clip:{c}" for c in map(_captioner_clip, folders) if c), None)
    if not clip:
        raise InputError("name the bundle's CLIP with --clip SPEC (open_clip:ARCH/TAG, hf-hub:ORG/NAME or a folder)")
    work = Path(tempfile.mkdtemp(prefix=".assembling-", dir=_parent(out)))
    try:
        components: dict = {"clip": {"kind": "open_clip", "path": "clip", "source": clip}}
        clips: dict = {}
        resolve_clip(clip, work / "clip")
        if prior:
            _resolve_prior(prior, work / "prior")
            components["prior"] = {"kind": "caption_prior", "path": "prior", "source": Path(prior).name}
        named = {}
        for i, folder in enumerate(folders):
            key = "captioner" if i == 0 else folder.name
            entry = {"kind": "clipcap_gpt2" if (folder / "captioner_config.json").is_file() else "clipcap_mapper",
                     "path": f"captioners/{folder.name}"}
            wants = _captioner_clip(folder)
            if wants and f"open_clip:{wants}" != clip:
                clip_key = wants.replace("/", "-")
                if clip_key not in clips:
                    resolve_clip(f"open_clip:{wants}", work / "clips" / clip_key)
                    clips[clip_key] = {"path": f"clips/{clip_key}", "source": f"open_clip:{wants}"}
                    if _same_weights(work / "clips" / clip_key, work / "clip"):   # the bundle's own, named otherwise
                        shutil.rmtree(work / "clips" / clip_key)
                        clips[clip_key] = None
                if clips[clip_key]:
                    entry["clip"] = clip_key
            _copy(folder, work / entry["path"])
            named[key] = entry
        if named:
            components["captioner"] = named.pop("captioner")
        if renderer:
            components["renderer"] = renderer_entry(renderer, work, fast)
        manifest = {"name": name or out.name, "format_version": 1, "components": components}
        clips = {k: v for k, v in clips.items() if v}
        if clips:
            manifest["clips"] = clips
        if named:
            manifest["captioners"] = named
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)          # a half-written bundle is never at `out`
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _same_weights(a: Path, b: Path) -> bool:
    fa, fb = a / "open_clip_model.safetensors", b / "open_clip_model.safetensors"
    return os.path.samefile(fa, fb) or (fa.stat().st_size == fb.stat().st_size and filecmp.cmp(fa, fb, shallow=False))


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def renderer_entry(spec: str, work: Path, fast: bool = False) -> dict:
    from ..models.fast_sd import PUBLISHED as FAST       # light: torch and diffusers load on use
    entry = _renderer_source(spec, work)
    return entry | {"fast": dict(FAST)} if fast else entry


def _renderer_source(spec: str, work: Path) -> dict:
    if spec in SOURCES and SOURCES[spec].kind == "hub":
        spec = SOURCES[spec].location
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InputError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        _copy(path, work / "renderer")
        return {"kind": "diffusers_stable_diffusion", "path": "renderer", "source": str(spec)}
    if spec.count("/") != 1:
        raise InputError(f"--renderer {spec}: give a diffusers folder, a Hub id (ORG/NAME) or sd15")
    # a Hub pipeline is named, not copied: it is fetched into the Hugging Face cache on first use
    return {"kind": "diffusers_hub", "repo": spec, "files": list(SD15_FILES)}


def published(out: str | Path | None = None, fast: bool = FAST_PUBLISHED) -> Path:
    """The seeds' set: OpenAI CLIP ViT-L/14, the CLIP GPT prior, ClipCap COCO and Conceptual (reading ViT-B/32),
    SD 1.5 (fast: with the LCM-LoRA and TAESD, few-step). Every missing piece is fetched (online) or named with its
    command (offline), all at once."""
    from ..models.clip import WeightsNotAvailable
    from .clipcap import convert_clipcap
    out = Path(out).expanduser() if out else default_published_dir()
    needed = ["clip-vit-l-14", "clip-gpt", "clip-vit-b-32", "gpt2", "clipcap-coco", "clipcap-conceptual", "sd15"]
    needed += ["lcm-lora-sdv1-5", "taesd"] if fast else []
    got, missing = {}, []
    for piece in needed:
        try:
            got[piece] = fetch.fetch(piece)
        except ClipGPTError as e:
            missing.append(f"- {piece}: {SOURCES[piece].fetch_command()}   ({str(e).splitlines()[0][:160]})")
    if missing:
        raise WeightsNotAvailable("These published pieces are not on this machine and could not be fetched:\n"
                                        + "\n".join(missing) + "\nRun those commands where there is internet (or copy "
                                        f"{fetch.cache_root()} and the Hugging Face cache here), then run this again.")
    with tempfile.TemporaryDirectory(prefix="clipgpt-convert-") as tmp:
        caps = []
        for piece in ("clipcap-coco", "clipcap-conceptual"):
            src = got[piece] / SOURCES[piece].files[0]
            caps.append(str(convert_clipcap(src, got["gpt2"], Path(tmp) / piece.split("-", 1)[1],
                                            clip="ViT-B-32/openai")))
        return assemble(out, clip="open_clip:ViT-L-14/openai", prior=str(got["clip-gpt"]), captioners=caps,
                        renderer="sd15", name=PUBLISHED, fast=fast)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="clipgpt bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", help="open_clip:ARCH/TAG, hf-hub:ORG/NAME, or a folder in open_clip's Hub layout")
    p.add_argument("--prior", help="a prior folder, or seed 000's clip_gpt.pt (converted here)")
    p.add_argument("--captioner", action="append", default=[],
                   help="a captioner folder (`clipgpt convert clipcap`); repeat for several, the first is the default")
    p.add_argument("--renderer", help="a diffusers folder, a Hub id, or sd15 (Stable Diffusion 1.5)")
    p.add_argument("--published", action="store_true", help="the seeds' published set, fetched when missing")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="the renderer few-step: SD 1.5 with the LCM-LoRA fused and TAESD (4 steps, no guidance; "
                        f"default: {'on' if FAST_PUBLISHED else 'off'} with --published, off otherwise)")
    p.add_argument("--out", help=f"the bundle folder (default with --published: {default_published_dir()})")
    p.add_argument("--name", help="the bundle's name (default: the folder's)")
    args = p.parse_args(argv)
    try:
        if args.published:
            out = published(args.out, FAST_PUBLISHED if args.fast is None else args.fast)
        else:
            if not args.out:
                raise InputError("give --out BUNDLE (the folder to write)")
            if args.fast and not args.renderer:
                raise InputError("--fast speeds up a renderer: give --renderer too (e.g. --renderer sd15 --fast)")
            out = assemble(args.out, args.clip, args.prior, args.captioner, args.renderer, args.name, bool(args.fast))
    except ClipGPTError as e:
        sys.exit(f"clipgpt bundle: {e}")
    print(f"wrote {out}\nrun it: python app.py --bundle {out}")
