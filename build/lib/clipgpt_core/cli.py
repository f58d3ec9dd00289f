"""The `clipgpt` command (also `python -m clipgpt_core`): one subcommand for each job run from a shell.

    clipgpt index --folder ~/photos --out ~/photos-index [--distribution-strategy pyspark]
    clipgpt index --world 5000 --out data/gallery            the built-in gallery
    clipgpt caption --folder ~/photos --out captions.jsonl   (or .csv) resumable batch captions
    clipgpt explain --csv scores.csv                         (or --positives DIR --negatives DIR)
    clipgpt serve --index photos=~/photos-index/index        clip-retrieval's back-end with our CLIP
    clipgpt train STAGE [...]                                STAGE: clip, prior, captioner, embedding_prior,
                                                             renderer, classifier, or bundle (all stale ones)
    clipgpt app [--share] [--port N] [--bundle B]            the Gradio app (what `python app.py` runs)

`clipgpt COMMAND --help` lists a command's options.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> the module whose main(argv) runs it
COMMANDS = {"index": "clipgpt_core.index", "caption": "clipgpt_core.caption_folder",
            "explain": "clipgpt_core.explain_cli", "serve": "clipgpt_core.back", "app": "app"}
# The trainers live in the training package beside the core (clipgpt_train), which imports the core;
# the core only names them here, so that `clipgpt train` reaches them without importing them itself.
TRAINERS = ("clip", "prior", "captioner", "embedding_prior", "renderer", "classifier", "bundle")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        if not rest or rest[0] not in TRAINERS:
            sys.exit(f"clipgpt train: name a stage, one of {', '.join(TRAINERS)} "
                     f"(e.g. `clipgpt train clip --help`)")
        module, rest = f"clipgpt_train.{rest[0]}", rest[1:]
    elif command in COMMANDS:
        module = COMMANDS[command]
    else:
        sys.exit(f"clipgpt: unknown command {command!r}; the commands are {', '.join([*COMMANDS, 'train'])} "
                 f"(clipgpt --help)")
    sys.argv = [f"clipgpt {command}", *rest]     # what argparse shows as the program in --help and errors
    importlib.import_module(module).main(rest)
