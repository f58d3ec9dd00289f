"""Train the ranking CLIP: a second CLIP that only ranks the captioners' captions of images.

    python -m clipgpt_train.ranking_clip        # assets/shapes/ranking_clip (checkpoints: runs/train_ranking_clip)
    python -m clipgpt_train.ranking_clip --steps 20 --pretrain-steps 10 --position-stage-steps 10 \\
        --out /tmp/rc --checkpoint /tmp/rc-ckpt                                             # smoke run

The bundle's CLIP is trained for retrieval on scenes of 1-4 objects; in scenes of three or four it confuses which
object is which size, so a caption that binds sizes wrong can outrank the right one. This is the same recipe
(clipgpt_train/clip.py, resumable the same way) on more crowded scenes and with fewer steps. Alone it would be a
worse bundle CLIP (retrieval falls); beside the bundle's, in the captioners' ranking (the mean of the two
similarities, Captioner.ranking_clips), it binds sizes more often. The figures: docs/results.md, CLIP-GPT.
It reads no other component, so nothing makes it stale but its own recipe.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import clip
from .loop import run_cli

__all__ = ["RankingClipConfig", "train"]


@dataclass
class RankingClipConfig(clip.TrainConfig):
    out: str = "assets/shapes/ranking_clip"
    checkpoint: str = "runs/train_ranking_clip"
    steps: int = 3000
    object_mix: tuple = (0.05, 0.15, 0.35, 0.45)   # share of scenes with 1..4 objects (the bundle CLIP's: 0.3 .. 0.2)
    position_stage_steps: int = 1000


def train(cfg: RankingClipConfig):
    """The CLIP recipe, its weights then rounded to float16 and saved so: half the size, and it only ranks
    (docs/results.md has the figures of both). Its train_config.json fingerprints the weights as saved."""
    model = clip.train(cfg)
    with torch.no_grad():
        for t in model.model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half())
    model.save(cfg.out, dtype=torch.float16)
    record = Path(cfg.out) / "train_config.json"
    record.write_text(json.dumps(json.loads(record.read_text()) | {
        "text_fingerprint": model.fingerprint("text"), "fingerprint": model.fingerprint()}, indent=2))
    return model


def main(argv=None):
    run_cli(RankingClipConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
