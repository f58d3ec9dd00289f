"""Serve index folders with clip-retrieval's own back-end (`clip back`), our CLIP as the query encoder.

    clipgpt serve --index shapes=~/.cache/clipgpt/galleries/KEY/index --bundle shapes
    clipgpt serve --index photos=~/photos-index/index --clip-dir assets/shapes/clip --port 1234

Query it with clipgpt_core.retrieval.remote.RemoteIndex("http://127.0.0.1:1234", "shapes") (or clip-retrieval's
ClipClient / front-end). Fully offline: everything clip back would download is switched off.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path


from ..models.clip import (CONFIG_FILE, WEIGHTS_FILE, ensure_registered)  # importing registers our configs (shapes-clip) with open_clip

# clip back's options that would reach the network (or jit-compile), all off for our models.
OFFLINE = dict(enable_mclip_option=False,          # M-CLIP text encoders from the HF hub
               use_jit=False,                      # torch.jit.script: slow, and pointless for open_clip
               provide_safety_model=False,         # NSFW classifier zip from GitHub (+ tensorflow)
               provide_violence_detector=False,    # prompt embeddings from GitHub
               provide_aesthetic_embeddings=False)  # default True: fetches embeddings from GitHub at boot


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def clip_model_spec(clip_dir: str | Path) -> str:
    """A saved CLIP component -> the all_clip model string "open_clip:ARCH//abs/weights.safetensors".

    all_clip splits it on "/" (ARCH, then the rest is the pretrained path) and calls
    open_clip.create_model_and_transforms in this process, where ARCH must be a registered config."""
    clip_dir = Path(clip_dir).expanduser().resolve()
    weights = clip_dir / WEIGHTS_FILE
    if not (clip_dir / CONFIG_FILE).is_file() or not weights.is_file():
        sys.exit(f"{clip_dir} is not a saved CLIP component (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads((clip_dir / CONFIG_FILE).read_text())
    name = ensure_registered(config)
    # all_clip cannot pass force_preprocess_cfg: the server preprocesses with open_clip's defaults
    from dataclasses import asdict
    from open_clip.transform import PreprocessCfg
    default = asdict(PreprocessCfg())
    differs = {k: v for k, v in config.get("preprocess_cfg", {}).items()
               if k in default and k != "size" and _plain(v) != _plain(default[k])}
    if differs:
        logging.warning("%s was saved with preprocessing %s; clip back uses open_clip's defaults, so "
                        "image queries may differ slightly from local ones", clip_dir, differs)
    return f"open_clip:{name}/{weights}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="clipgpt serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", action="append", required=True, metavar="NAME=FOLDER",
                   help="an index folder (with image.index, metadata/) to serve under NAME; repeatable")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--clip-dir", help="a saved CLIP component (open_clip_config.json + safetensors)")
    src.add_argument("--bundle", default="shapes", help="a bundle name or directory (default: shapes)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=1234)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    indices = {}
    for item in args.index:
        name, sep, folder = item.partition("=")
        folder = Path(folder).expanduser().resolve()
        if not sep or not name:
            p.error(f"--index takes NAME=FOLDER, got {item!r}")
        if not (folder / "image.index").is_file():
            p.error(f"{folder} has no image.index (build one with clipgpt index)")
        indices[name] = str(folder)

    clip_dir = args.clip_dir
    if clip_dir is None:
        from ..bundle import BundleError, load_bundle
        from ..models.clip import WeightsNotAvailable
        try:
            bundle = load_bundle(args.bundle)
        except (BundleError, WeightsNotAvailable) as e:
            p.error(str(e))
        if bundle.path is None:
            p.error("--bundle must be a bundle directory or built-in name; use --clip-dir for a saved CLIP")
        clip_dir = bundle.path / bundle.manifest["components"]["clip"]["path"]
        del bundle

    import importlib
    import flask
    cb = importlib.import_module("clip_retrieval.clip_back")  # the package re-exports a function by that name

    class LoopbackFlask(flask.Flask):
        # clip_back hard-codes app.run(host="0.0.0.0"), i.e. every interface; honour --host instead.
        def run(self, host=None, port=None, **kwargs):
            super().run(host=args.host, port=port, **kwargs)

    cb.Flask = LoopbackFlask
    import open_clip
    create = open_clip.create_model_and_transforms

    def create_for_inference(*a, **kw):
        # all_clip keeps open_clip models in train mode and runs a warm-up batch: with BatchNorm (our
        # ResNet tower) that rewrites the running statistics and normalises each query by its own.
        # all_clip looks this factory up at call time, so this is what clip back gets.
        model, preprocess_train, preprocess_val = create(*a, **kw)
        return model.eval(), preprocess_train, preprocess_val

    open_clip.create_model_and_transforms = create_for_inference
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # so the temp folder is removed on terminate
    with tempfile.TemporaryDirectory(prefix="clipgpt-back-") as workdir:
        clip_model = clip_model_spec(clip_dir)
        paths_file = Path(workdir) / "indices_paths.json"
        paths_file.write_text(json.dumps({name: {"indice_folder": folder, "clip_model": clip_model, **OFFLINE}
                                          for name, folder in indices.items()}))
        print(f"serving {', '.join(indices)} on http://{args.host}:{args.port} with {clip_model}", flush=True)
        cb.clip_back(indices_paths=str(paths_file), port=args.port, clip_model=clip_model,
                     columns_to_return=["image_path", "caption", "url"], **OFFLINE)

if __name__ == "__main__":
    main()
