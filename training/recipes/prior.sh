#!/bin/sh
# Fit the prior to a codec's tokens (docs/training.md, "The prior"). Tokenizes the corpus and the
# clean held-out set with the codec (once), then trains; running it again resumes the run.
#   nohup training/recipes/prior.sh CODEC_CHECKPOINT TOKENS_DIR RUN_DIR [--field value ...] > LOG 2>&1 &
# e.g. training/recipes/prior.sh codec/assets/codec.safetensors data/tokens runs/prior
set -eu
cd "$(dirname "$0")/../.."
codec=$1 tokens=$2 run=$3
shift 3
for split in val train; do
    [ -f "$tokens/$split/index.json" ] || .venv/bin/python -m codec tokenize data/corpus/manifest.jsonl \
        "$tokens/$split" --split "$split" --checkpoint "$codec" -q
done
[ -f "$tokens/clean/index.json" ] || .venv/bin/python -m codec tokenize data/clean/manifest.jsonl \
    "$tokens/clean" --checkpoint "$codec" -q
exec .venv/bin/python -m training.train_prior --train_tokens "$tokens/train" --val_tokens "$tokens/val" \
    --run_dir "$run" --threads 2 --batch_size 16 --seq_frames 250 --learning_rate 1e-3 --warmup_steps 200 \
    --lr_half_life 2000 --steps 4000 --val_every 250 --save_every 100 "$@"
