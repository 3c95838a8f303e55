#!/usr/bin/env bash
# The whole G2P recipe: data, peer baseline, both architectures under the same wall-clock budget,
# test-set scores at 15 / 30 / 60 minutes (snapshots of one run), greedy and beam 5.
# Usage: bash recipes/g2p_cmudict/run.sh [MINUTES]   (from the repository root, after `make setup`)
set -euo pipefail
MINUTES=${1:-60}
R=recipes/g2p_cmudict
B=.venv/bin
# Both trainings start fresh (bigseq refuses an --out that holds a run): an earlier attempt's runs/ is left
# for you to keep or delete.
if [ -e $R/runs/transformer ] || [ -e $R/runs/gru ]; then
  echo "$R/runs holds an earlier attempt's runs: move it away or delete it (rm -rf $R/runs), then run again" >&2
  exit 2
fi
$B/python $R/prepare.py --out $R/data
mkdir -p $R/runs
$B/pip install -q phonetisaurus && $B/python $R/phonetisaurus_baseline.py --data $R/data | tee $R/runs/phonetisaurus.json
for arch in transformer gru; do
  $B/bigseq train --config $R/$arch.yaml --train $R/data/train.jsonl --valid $R/data/valid.jsonl \
    --out $R/runs/$arch --max-minutes "$MINUTES" --set train.length_grid=0  # as measured (RESULTS.md)
  for snap in $R/runs/$arch/snapshots/*.safetensors; do
    for beam in 1 5; do
      echo "$arch $(basename "$snap" .safetensors) beam=$beam $($B/bigseq evaluate $R/runs/$arch --weights "$snap" \
        --data $R/data/test.jsonl --beam $beam)"
    done
  done
done
