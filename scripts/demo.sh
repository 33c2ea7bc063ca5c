#!/usr/bin/env bash
# make demo: fetch GPT-2 (scripts/download-model.sh), then run sql/demo.sql in
# the sqlite3 shell. With no route to Hugging Face, run the same demo on a
# generated tiny checkpoint with random weights (and GPT-2's real vocabulary).
# Either way the last line names the model directory used, to load it again.
# Env: MODEL (default gpt2), MODELS_DIR (as download-model.sh),
#      DEMO_TINY (the fallback checkpoint's directory, default build/demo-tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${MODEL:-gpt2}
if scripts/download-model.sh "$name"; then
  model="${MODELS_DIR:-models}/$name"
else
  [ $? -eq 2 ] || exit 1
  cache=$(scripts/fetch-vocab.sh)
  model=${DEMO_TINY:-build/demo-tiny}
  [ -f "$model/model.safetensors" ] ||
    /usr/bin/python3 tests/make_checkpoint.py "$model" --shape tiny --vocab-dir "$cache/gpt2-vocab" >/dev/null
  echo "=================================================================="
  echo " DEMO ON A GENERATED TINY CHECKPOINT: ITS WEIGHTS ARE RANDOM, so the"
  echo " text below is gibberish; the tokenizer is GPT-2's real one."
  echo "=================================================================="
fi
GPT2_MODEL="$model" sqlite3 -bail -cmd ".load build/gpt2" :memory: < sql/demo.sql
model=$(cd "$model" && pwd)
echo
echo "demo: the model used is in $model"
echo "      (sqlite3: .load $PWD/build/gpt2  then  SELECT gpt2_load('$model');)"
