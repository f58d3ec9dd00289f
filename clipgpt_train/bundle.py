"""Retrain the built-in bundle, every stale component, in dependency order.

    python -m clipgpt_train.bundle                      # assets/shapes: whatever is stale, resumably
    python -m clipgpt_train.bundle --stages clip,prior  # only these (each still only if stale)
    python -m clipgpt_train.bundle --force clip_gpt     # retrain it (and what depends on it) anyway
    python -m clipgpt_train.bundle --device cuda        # the long stages on a GPU
    python -m clipgpt_train.bundle --from-clip DIR      # the CLIP's first stage is that saved CLIP's

Stages: clip -> prior -> embedding_prior -> clip_gpt -> renderer -> layout_head, and the ranking CLIP, which reads no
other component and only ranks captions of images (clipgpt_train/ranking_clip.py). (CLIP-GPT, grown from the prior, is
also the bundle's image captioner: the separate captioner stage, 55 min, is gone; `python -m clipgpt_train.captioner`
still trains one for other bundles. The layout head, which reads CLIP image vectors for renderer.decode, is kept
beside the renderer). A component is stale when the
recipe it was trained with (its config, without paths and thread counts) or the fingerprint of what
it depends on (bundle.DEPENDS_ON) differs from what the bundle holds now, so a new CLIP makes CLIP-GPT,
the embedding prior and the layout head stale, and a new text tower the prior and the renderer too.
Each stage checkpoints as it goes (runs/train_<stage>/): stop this command at any point and run it
again, and it skips the finished stages and continues the interrupted one where it stopped. After
each stage it writes the component's trained_against.json (recipe, fingerprints, minutes, machine)
and the bundle's train_times.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from clipgpt_core.bundle import BUILTIN, DEPENDS_ON, LINEAGE_FILE, dependency_fingerprints, write_lineage
from clipgpt_core.models.clip import load_clip
from clipgpt_core.errors import InputError
from .loop import run_key

ORDER = ("clip", "prior", "embedding_prior", "clip_gpt", "renderer", "layout_head", "ranking_clip")


def stage_config(stage: str, bundle: Path, overrides: dict, checkpoints: str = "runs/train_bundle"):
    """The trainer's config for `stage`, writing into `bundle` (checkpoints under `checkpoints`/stage),
    with its defaults otherwise."""
    if stage == "clip":
        from .clip import TrainConfig as cls
        base = {"out": str(bundle / "clip")}
    elif stage == "prior":
        from .prior import PriorTrainConfig as cls
        base = {"out": str(bundle / "prior"), "clip": str(bundle)}
    elif stage == "embedding_prior":
        from .embedding_prior import EmbeddingPriorTrainConfig as cls
        base = {"out": str(bundle / "embedding_prior"), "bundle": str(bundle)}
    elif stage == "clip_gpt":
        from .clip_gpt import ClipGPTTrainConfig as cls
        base = {"out": str(bundle / "clip_gpt"), "bundle": str(bundle)}
    elif stage == "renderer":
        from .renderer import RendererTrainConfig as cls
        base = {"out": str(bundle / "renderer"), "bundle": str(bundle)}
    elif stage == "layout_head":
        from .layout_head import LayoutHeadTrainConfig as cls
        base = {"out": str(bundle / "layout_head"), "bundle": str(bundle)}
    elif stage == "ranking_clip":             # its own CLIP from scratch: --from-clip is the clip stage's alone
        from .ranking_clip import RankingClipConfig as cls
        base = {"out": str(bundle / "ranking_clip")}
        overrides = {k: v for k, v in overrides.items() if k != "from_clip"}
    else:
        raise InputError(f"unknown stage {stage!r}; stages: {', '.join(ORDER)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    base["checkpoint"] = str(Path(checkpoints) / stage)
    return cls(**{k: v for k, v in (base | overrides).items() if k in fields})


def trainer(stage: str):
    from . import clip, clip_gpt, embedding_prior, layout_head, prior, ranking_clip, renderer
    return {"clip": clip, "prior": prior, "embedding_prior": embedding_prior, "clip_gpt": clip_gpt,
            "renderer": renderer, "layout_head": layout_head, "ranking_clip": ranking_clip}[stage].train


def recipe(cfg) -> str:
    """A short hash of the settings that decide the weights (not paths, threads or devices)."""
    # from_pipeline / from_clip: a saved renderer's stages 1-2 / a saved CLIP's first stage, this recipe's own
    key = {k: v for k, v in run_key(cfg).items()
           if k not in ("bundle", "clip", "text_from", "from_pipeline", "from_clip")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def is_fresh(stage: str, bundle: Path, cfg, components: dict) -> tuple[bool, str]:
    record_file = bundle / components[stage]["path"] / LINEAGE_FILE
    if not record_file.is_file():
        return False, "no record of how it was trained"
    record = json.loads(record_file.read_text())
    if record.get("recipe") != recipe(cfg):
        return False, "its recipe changed"
    now = dependency_fingerprints(bundle, components, load_clip(bundle / components["clip"]["path"]))
    for dep in DEPENDS_ON.get(stage, ()):
        if record.get(dep) != now.get(dep):
            return False, f"its {dep} changed"
    return True, "up to date"


def machine() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})"


def run(bundle: Path, stages=ORDER, force=(), overrides: dict | None = None,
        checkpoints: str = "runs/train_bundle") -> dict:
    """Train the stale stages of `bundle` in order; returns {stage: minutes or "up to date"}."""
    overrides = overrides or {}
    manifest = json.loads((bundle / "manifest.json").read_text())
    components = manifest["components"]
    times_file = bundle / "train_times.json"
    forced = set()
    for name in force:     # a forced stage forces everything after it that can depend on it (what depends on nothing,
        # the ranking CLIP, only when named)
        forced |= {name} | {s for s in ORDER[ORDER.index(name):] if s in DEPENDS_ON}
    done = {}
    for stage in ORDER:
        if stage not in stages or stage not in components:
            continue
        cfg = stage_config(stage, bundle, overrides, checkpoints)
        fresh, why = is_fresh(stage, bundle, cfg, components)
        if fresh and stage not in forced:
            print(f"[{stage}] up to date")
            done[stage] = "up to date"
            continue
        print(f"[{stage}] retraining: {why if stage not in forced else 'forced'}")
        t0 = time.time()
        trainer(stage)(cfg)
        minutes = round((time.time() - t0) / 60, 2)
        fingerprints = dependency_fingerprints(bundle, components, load_clip(bundle / components["clip"]["path"]))
        out = bundle / components[stage]["path"]
        write_lineage(out, stage, fingerprints, recipe=recipe(cfg), minutes_this_session=minutes, machine=machine())
        # read again: another stage may have finished meanwhile in a second process
        times = json.loads(times_file.read_text()) if times_file.is_file() else {}
        times[stage] = {"minutes": _recorded_minutes(out, minutes), "machine": machine()}
        times_file.write_text(json.dumps(times, indent=2))
        done[stage] = minutes
    return done


def _recorded_minutes(out: Path, fallback: float) -> float:
    """The trainer's own figure (over every session of a resumed run) when it wrote one."""
    record = out / "train_config.json"
    return json.loads(record.read_text()).get("minutes", fallback) if record.is_file() else fallback


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(BUILTIN["shapes"]), help="the bundle directory (default: the built-in)")
    p.add_argument("--stages", default=",".join(ORDER), help="comma-separated subset of " + ", ".join(ORDER))
    p.add_argument("--force", default="", help="stages to retrain even if up to date (with what follows them)")
    p.add_argument("--device", default=None, help="cpu or cuda, for every stage that takes one")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--checkpoints", default="runs/train_bundle", help="where each stage keeps its resumable state")
    p.add_argument("--from-clip", default=None, help="a saved CLIP that stands for the clip stage's first stage "
                   "(the same recipe's, e.g. a copy of the bundle's clip before its position stage): only the "
                   "position stage runs")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    force = [s for s in args.force.split(",") if s]
    for s in stages + force:
        if s not in ORDER:
            p.error(f"unknown stage {s!r}; stages: {', '.join(ORDER)}")
    overrides = {k: v for k, v in (("device", args.device), ("threads", args.threads), ("from_clip", args.from_clip))
                 if v is not None}
    done = run(Path(args.out), stages, force, overrides, args.checkpoints)
    print(json.dumps(done, indent=2))


if __name__ == "__main__":
    main()
