#!/usr/bin/env bash
# Reproduce the built-in CLIP (assets/shapes/clip) exactly: fixed seeds, two stages, ~65 min on 2 CPU cores.
#   stage 1: the plain recipe (pairs + text hard negatives) on a 2800-step cosine schedule, stopped at 800
#            (colour, size and background were learnt; shape and position were not moving);
#   stage 2: from there, 2000 steps adding hard groups (8 images sharing background and colour,
#            so only shape, size and position tell them apart).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-assets/shapes/clip}
python -m clipgpt_core.train_clip --out runs/shapes-clip-stage1 --steps 2800 --stop-after 800 --group-share 0
python -m clipgpt_core.train_clip --resume runs/shapes-clip-stage1 --out "$OUT" --steps 2000 --warmup 50 --lr 1.5e-3
