#!/bin/sh
# The whole model (encoder, quantizer, decoder) fine-tuned from the bundled one: docs/training.md,
# "The whole model fine-tuned". Running it again resumes the run from runs/full1/state.safetensors.
#   nohup training/recipes/full1.sh > runs/full1.log 2>&1 &
set -eu
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m training.train --manifest data/corpus/manifest.jsonl --run_dir runs/full1 \
    --init_from codec/assets/codec.safetensors --precision auto --threads 2 \
    --augment 0.3 --level_dropout 1.0 --kind_weights '{"speech": 0.75, "tts": 0.05, "music": 0.2}' \
    --lambdas '{"pitch": 5.0, "stoi": 3.0, "pesq": 1.0, "sisdr": 0.05}' \
    --learning_rate 2e-4 --warmup_steps 200 --lr_half_life 20000 --val_every 500 "$@"
