#!/usr/bin/env bash
# make demo: fetch GPT-2 (scripts/download-model.sh), then run sql/demo.sql in
# the sqlite3 shell. With no route to Hugging Face, run the same demo on a
# generated tiny checkpoint with random weights (and GPT-2's real vocabulary).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${MODEL:-gpt2}
if scripts/download-model.sh "$name"; then
  model="models/$name"
else
  [ $? -eq 2 ] || exit 1
  cache=$(scripts/fetch-vocab.sh)
  model=build/demo-tiny
  [ -f "$model/model.safetensors" ] ||
    /usr/bin/python3 tests/make_checkpoint.py "$model" --shape tiny --vocab-dir "$cache/gpt2-vocab" >/dev/null
  echo "=================================================================="
  echo " DEMO ON A GENERATED TINY CHECKPOINT: ITS WEIGHTS ARE RANDOM, so the"
  echo " text below is gibberish; the tokenizer is GPT-2's real one."
  echo "=================================================================="
fi
GPT2_MODEL="$model" sqlite3 -bail -cmd ".load build/gpt2" :memory: < sql/demo.sql
