"""The `clipgpt` command (also `python -m clipgpt_app`): one subcommand for each job run from a shell.

    clipgpt index --folder ~/photos --out ~/photos-index [--distribution-strategy pyspark]
    clipgpt index --world 5000 --out data/gallery            the built-in gallery
    clipgpt caption --folder ~/photos --out captions.jsonl   (or .csv) resumable batch captions
    clipgpt explain --csv scores.csv                         (or --positives DIR --negatives DIR)
    clipgpt serve --index photos=~/photos-index/index        clip-retrieval's back-end with our CLIP
    clipgpt train STAGE [...]                                STAGE: clip, prior, embedding_prior, clip_gpt,
                                                             renderer, layout_head, ranking_clip, classifier,
                                                             bundle (all stale), captioner
    clipgpt app [--share] [--port N] [--bundle B]            the Gradio app (what `python app.py` runs)
    clipgpt space --out DIR                                  a folder a Hugging Face Space accepts as it is
    clipgpt convert clip-gpt SRC --out DIR                   seed 000's clip_gpt.pt -> a caption prior
    clipgpt convert clipcap SRC --gpt2 DIR_OR_HUB_ID --out DIR   ClipCap's checkpoints -> a captioner
    clipgpt bundle --clip SPEC [--prior DIR] [--captioner DIR] [--renderer SD] --out BUNDLE   (or --published)
    clipgpt fetch NAME [...] | --all | --list               the published pieces, downloaded once and cached

`clipgpt COMMAND --help` lists a command's options.
"""
from __future__ import annotations

import sys


# Each command imports its module where it runs (static imports, seen by tests/test_layout.py), so that
# `clipgpt index` pays for neither Gradio nor the trainers. This module is the top of the import order:
# the app package may import the core and the trainers; neither imports it.
def _index(argv):
    from clipgpt_core.retrieval import local
    local.main(argv)


def _caption(argv):
    from clipgpt_core.jobs import caption_folder
    caption_folder.main(argv)


def _explain(argv):
    from clipgpt_core.jobs import explain
    explain.main(argv)


def _serve(argv):
    from clipgpt_core.retrieval import serve
    serve.main(argv)


def _app(argv):
    from clipgpt_app import main as app
    app.main(argv)


def _space(argv):
    from clipgpt_app import space
    space.main(argv)


def _convert(argv):
    if not argv or argv[0] not in ("clip-gpt", "clipcap"):
        sys.exit("clipgpt convert: name what to convert, clip-gpt or clipcap (e.g. `clipgpt convert clip-gpt --help`)")
    sys.argv = [f"clipgpt convert {argv[0]}", *argv[1:]]
    if argv[0] == "clip-gpt":
        from clipgpt_core.published import clip_gpt
        clip_gpt.main(argv[1:])
    else:
        from clipgpt_core.published import clipcap
        clipcap.main(argv[1:])


def _bundle(argv):
    from clipgpt_core.published import assemble
    assemble.main(argv)


def _fetch(argv):
    from clipgpt_core.published import fetch
    fetch.main(argv)


def _train(argv):
    from clipgpt_train import (bundle, captioner, classifier, clip, clip_gpt, embedding_prior, layout_head, prior,
                               ranking_clip, renderer)
    trainers = {"clip": clip, "prior": prior, "captioner": captioner, "embedding_prior": embedding_prior,
                "clip_gpt": clip_gpt, "renderer": renderer, "layout_head": layout_head, "ranking_clip": ranking_clip,
                "classifier": classifier, "bundle": bundle}
    if not argv or argv[0] not in trainers:
        sys.exit(f"clipgpt train: name a stage, one of {', '.join(trainers)} (e.g. `clipgpt train clip --help`)")
    sys.argv = [f"clipgpt train {argv[0]}", *argv[1:]]
    trainers[argv[0]].main(argv[1:])


COMMANDS = {"index": _index, "caption": _caption, "explain": _explain, "serve": _serve, "app": _app,
            "space": _space, "train": _train, "convert": _convert, "bundle": _bundle, "fetch": _fetch}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"clipgpt: unknown command {command!r}; the commands are {', '.join(COMMANDS)} (clipgpt --help)")
    sys.argv = [f"clipgpt {command}", *rest]     # what argparse shows as the program in --help and errors
    COMMANDS[command](rest)
