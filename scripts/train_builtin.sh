#!/usr/bin/env bash
# Reproduce the shipped built-in model (engine/assets/builtin): one `diffuserve train-builtin`
# run from seed 0 on the CPU (the defaults), install it, and draw its training curve. See the
# model card for the wall time on 2 CPU cores.
#   bash scripts/train_builtin.sh [RUN_DIR]     (default runs/builtin)
set -euo pipefail
run="${1:-runs/builtin}"
# Fresh model and tokenizer, 12,000 steps on two threads at peak learning rate 2e-3, decaying over
# the second half. Run it on an otherwise idle machine: two threads sharing cores are slow.
diffuserve train-builtin --out-dir "$run" --install
# The training curve (held-out accuracy against steps, exact mode, every kept snapshot).
diffuserve eval-tasks --curve "$run" --per-task 10 --concurrency 50 --setting cache=none \
    --threads 1 --plot docs/builtin_training_curve.png
