#!/usr/bin/env bash
# Reproduce the shipped built-in model (engine/assets/builtin): two `diffuserve train-builtin`
# phases from seed 0 on the CPU, then install the result. See the model card for wall times.
#   bash scripts/train_builtin.sh [RUN_ROOT]     (default runs/builtin)
set -euo pipefail
root="${1:-runs/builtin}"
# Phase 1: fresh model and tokenizer, 3,600 steps at peak learning rate 2e-3 (the defaults).
diffuserve train-builtin --out-dir "$root/phase1"
# Phase 2: 5,000 more steps from phase 1 at 1e-3 on a corpus drawn with seed 1, then install.
diffuserve train-builtin --init-from "$root/phase1/checkpoint" --out-dir "$root/phase2" \
    --steps 5000 --lr 1e-3 --seed 1 --snapshot-every 500 --install
# The training curve of both phases (held-out accuracy against steps, exact mode).
diffuserve eval-tasks --curve "$root/phase1" "$root/phase2" --per-task 10 --concurrency 50 --setting cache=none \
    --threads 1 --plot docs/builtin_training_curve.png
