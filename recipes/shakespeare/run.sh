#!/usr/bin/env bash
# Reproduce recipes/shakespeare/RESULTS.md on 2 CPU cores: prepare, baselines, pretrain once, then the
# pretrained-vs-scratch ablation over 3 seeds for both tasks. Run from anywhere; `make setup` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=recipes/shakespeare
PY=.venv/bin/python
$PY $R/prepare.py --out $R/data
$PY $R/baselines.py --data $R/data --json $R/runs/baselines.json
.venv/bin/bigseq pretrain --config $R/pretrain.yaml --text "$R/data/corpus/*.txt" --out $R/runs/pretrain \
  --max-minutes "${PRETRAIN_MINUTES:-30}" --max-steps 1000000
$PY $R/ablation.py --init $R/runs/pretrain --data $R/data --out $R/runs/ablation --seeds 1 2 3 \
  --steps "${STEPS:-400}"
