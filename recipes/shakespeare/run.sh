#!/usr/bin/env bash
# Reproduce recipes/shakespeare/RESULTS.md on 2 CPU cores: prepare, baselines, pretrain once, then the
# pretrained-vs-scratch ablation over 3 seeds for both tasks. Run from anywhere; `make setup` first.
# The fine-tunings run in bf16 autocast where the CPU has bf16 matrix units (Intel AMX), else in fp32
# (override: PRECISION=fp32 bash run.sh); both arms always share it.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=recipes/shakespeare
PY=.venv/bin/python
# Every run below starts fresh (bigseq refuses an --out that holds a run, and ablation.py would reuse runs
# fine-tuned from an older pretraining): an earlier attempt's runs/ is left for you to keep or delete.
if [ -e $R/runs/pretrain ]; then
  echo "$R/runs holds an earlier attempt's runs: move it away or delete it (rm -rf $R/runs), then run again" >&2
  exit 2
fi
PRECISION=${PRECISION:-$($PY -c 'from bigseq.speed import cpu_bf16_pays; print("bf16" if cpu_bf16_pays() else "fp32")')}
# The measured runs predate train.length_grid (rounded batch lengths, default 8 now): exact lengths reproduce
# their batches (BATCHES=train.length_grid=8 bash run.sh for the current default).
BATCHES=${BATCHES:-train.length_grid=0}
# The measured genre runs published the checkpoint chosen on valid; genre.yaml keeps the final weights now
# (RESULTS.md, "Which checkpoint"). The final weights of every run are in its train_state/ as well.
KEEP=${KEEP:-train.keep=best}
# ... and without mixing in the pretrained weights (genre.yaml's train.wise_alpha: RESULTS.md, "WiSE-FT").
WISE=${WISE:-train.wise_alpha=1}
$PY $R/prepare.py --out $R/data
$PY $R/baselines.py --data $R/data --json $R/runs/baselines.json
.venv/bin/bigseq pretrain --config $R/pretrain.yaml --text "$R/data/corpus/*.txt" --out $R/runs/pretrain \
  --max-minutes "${PRETRAIN_MINUTES:-30}" --max-steps 1000000 --set "$BATCHES"
$PY $R/ablation.py --init $R/runs/pretrain --data $R/data --out $R/runs/ablation --seeds 1 2 3 \
  --genre-steps "${GENRE_STEPS:-600}" --nextline-steps "${NEXTLINE_STEPS:-400}" --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES"
# The longer runs (RESULTS.md, "Longer pretraining, longer fine-tuning"): the 30-minute pretraining continued
# for 20 more minutes (a copy, resumed with a 50-minute budget: the cosine schedule restarts at 34% of the peak
# rate), then the genre ablation with 1,000 fine-tuning steps.
rm -rf $R/runs/pretrain-50 && cp -r $R/runs/pretrain $R/runs/pretrain-50
.venv/bin/bigseq pretrain --config $R/pretrain.yaml --text "$R/data/corpus/*.txt" --out $R/runs/pretrain-50 \
  --resume --max-minutes 50 --max-steps 1000000 --set "train.precision=$PRECISION" --set "$BATCHES"
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/ablation-50 --tasks genre --seeds 1 2 3 \
  --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES"
# The objective comparison (RESULTS.md, "Span corruption instead of prefix LM"): a fresh span-corruption
# pretraining of 3,000 steps (about the tokens of the 50-minute prefix run), then genre fine-tuning from it
# (only seed 1 was measured).
.venv/bin/bigseq pretrain --config $R/pretrain.yaml --text "$R/data/corpus/*.txt" --out $R/runs/pretrain-span \
  --objective span --max-steps 3000 --max-minutes 60 --set "train.precision=$PRECISION" --set "$BATCHES"
$PY $R/ablation.py --init $R/runs/pretrain-span --data $R/data --out $R/runs/ablation-span --tasks genre \
  --seeds 1 --arms pretrained --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES"
# Regularised fine-tuning (RESULTS.md, "Regularised fine-tuning"): LoRA rank 16 and frozen embeddings, seed 1.
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/genre-lora16 --tasks genre \
  --seeds 1 --arms pretrained --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES" \
  --set train.lora_rank=16 --set train.lr=0.001
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/genre-freeze-emb --tasks genre \
  --seeds 1 --arms pretrained --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES" --set "train.freeze=[embeddings]"
# A validation set of 2 plays per genre where a genre has 5+ training plays (RESULTS.md, "Validation on more
# plays"); pretrained arm only, with the current default batches (length grid 8).
$PY $R/prepare.py --out $R/data-v2 --valid-per-genre 2
$PY $R/baselines.py --data $R/data-v2 --json $R/runs/baselines-v2.json
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data-v2 --out $R/runs/ablation-v2 --tasks genre \
  --arms pretrained --seeds 1 2 3 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE"
# More training windows, no speaker names (seed 1 each), longer windows (seeds 1-3) (RESULTS.md, "More training
# windows; no speaker names; longer windows").
$PY $R/prepare.py --out $R/data-s2 --train-stride 2
$PY $R/baselines.py --data $R/data-s2 --json $R/runs/baselines-s2.json
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data-s2 --out $R/runs/ablation-s2 --tasks genre \
  --arms pretrained --seeds 1 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE"
$PY $R/prepare.py --out $R/data-ns --no-speakers
$PY $R/baselines.py --data $R/data-ns --json $R/runs/baselines-ns.json
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data-ns --out $R/runs/ablation-ns --tasks genre \
  --arms pretrained --seeds 1 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE"
$PY $R/prepare.py --out $R/data-w16 --window 16
$PY $R/baselines.py --data $R/data-w16 --json $R/runs/baselines-w16.json
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data-w16 --out $R/runs/ablation-w16 --tasks genre \
  --arms pretrained --seeds 1 2 3 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set data.max_src_len=320
# The prefix-space tokenizer (RESULTS.md, "Tokenizer: a space before every text"): the first ablation's pretrained
# arm again. With today's code runs/pretrain above already has that tokenizer; this is the run measured.
.venv/bin/bigseq pretrain --config $R/pretrain.yaml --text "$R/data/corpus/*.txt" --out $R/runs/pretrain-px \
  --max-minutes 30 --max-steps 1000000 --set train.length_grid=0
$PY $R/ablation.py --init $R/runs/pretrain-px --data $R/data --out $R/runs/ablation-px --arms pretrained \
  --seeds 1 2 3 --genre-steps 600 --nextline-steps 400 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set train.length_grid=0
# Which checkpoint (RESULTS.md, "Which checkpoint"): seeds 4-6 of the 1,000-step genre runs, every finished
# genre run scored with its final weights, then fine-tuning with dropout 0.3 and genre.yaml's final weights.
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/ablation-50-more --tasks genre \
  --arms pretrained --seeds 4 5 6 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$KEEP" --set "$WISE" --set "$BATCHES"
for run in $R/runs/ablation*/genre-*; do
  variant=${run#*/ablation-}; variant=${variant%%/*}
  data=$R/data; case $variant in s2|ns|w16|v2) data=$R/data-$variant;; esac
  echo "$run: $(.venv/bin/bigseq evaluate "$run" --data "$data/genre_test.jsonl" \
    --weights "$(ls "$run"/train_state/*.safetensors | tail -1)")"
done
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/ablation-50-drop3 --tasks genre \
  --arms pretrained --seeds 1 2 3 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$BATCHES" \
  --set model.dropout=0.3 --set "$WISE"
# WiSE-FT (RESULTS.md, "WiSE-FT"): the final weights of seeds 1-6 mixed with the pretrained ones, then seeds 7-9
# trained with genre.yaml as it is (train.wise_alpha: 0.5) and their unmixed final weights scored too.
for run in $R/runs/ablation-50/genre-pretrained-s{1,2,3} $R/runs/ablation-50-more/genre-pretrained-s{4,5,6}; do
  for alpha in 0.5 0.7; do
    echo "$run alpha $alpha: $(.venv/bin/bigseq evaluate "$run" --data $R/data/genre_test.jsonl \
      --weights "$(ls "$run"/train_state/*.safetensors | tail -1)" --wise-alpha $alpha)"
  done
done
$PY $R/ablation.py --init $R/runs/pretrain-50 --data $R/data --out $R/runs/ablation-50-wise --tasks genre \
  --arms pretrained --seeds 7 8 9 --genre-steps 1000 --set "train.precision=$PRECISION" --set "$BATCHES"
for run in $R/runs/ablation-50-wise/genre-*; do
  echo "$run unmixed: $(.venv/bin/bigseq evaluate "$run" --data $R/data/genre_test.jsonl \
    --weights "$(ls "$run"/train_state/*.safetensors | tail -1)")"
done
