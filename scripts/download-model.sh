#!/usr/bin/env bash
# Download a GPT-2 checkpoint from Hugging Face into DIR, default models/NAME/ (in the
# repository; under the current directory when installed as gpt2-download).
#   scripts/download-model.sh [gpt2|gpt2-medium|gpt2-large|gpt2-xl|distilgpt2] [DIR]
# Resumable (curl -C -), with a progress bar; verifies each file's size and, for
# model.safetensors, the SHA-256 that the Hub lists for it. Exit 2 when the Hub
# cannot be reached (one line on stderr), 1 on any other failure.
set -euo pipefail
name=${1:-gpt2}
case "$name" in
  gpt2|gpt2-medium|gpt2-large|gpt2-xl) repo="openai-community/$name" ;;
  distilgpt2) repo="distilbert/distilgpt2" ;;
  *) echo "download-model: unknown model '$name' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2)" >&2; exit 1 ;;
esac
hub=${HF_ENDPOINT:-https://huggingface.co}
base="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$base/ext/version.h" ] || base=$PWD   # installed: not inside the repository
dir=${2:-$base/models/$name}
mkdir -p "$dir"

# One small request first, so that no route to the Hub is said in one line.
if ! tree=$(curl -fsS --max-time 20 "$hub/api/models/$repo/tree/main" 2>/dev/null); then
  echo "download-model: cannot reach $hub (no network route); nothing downloaded" >&2
  exit 2
fi

# name size sha256 (sha256 only for LFS files) from the Hub's listing.
listing=$(printf '%s' "$tree" | /usr/bin/python3 -c '
import json, sys
for f in json.load(sys.stdin):
    if f.get("type") != "file": continue
    lfs = f.get("lfs") or {}
    print(f["path"], lfs.get("size", f.get("size", -1)), lfs.get("oid", "-"))
')

for file in config.json vocab.json merges.txt model.safetensors; do
  read -r _ size sha < <(printf '%s\n' "$listing" | awk -v f="$file" '$1 == f') || {
    echo "download-model: $repo has no $file" >&2; exit 1; }
  out="$dir/$file"
  if [ -f "$out" ] && [ "$(stat -c %s "$out")" = "$size" ]; then
    echo "$file: already complete"
  else
    echo "$file ($size bytes)"
    curl -fL --retry 3 -C - --progress-bar -o "$out.part" "$hub/$repo/resolve/main/$file"
    mv "$out.part" "$out"
  fi
  got=$(stat -c %s "$out")
  [ "$got" = "$size" ] || { echo "download-model: $file is $got bytes, expected $size" >&2; exit 1; }
  if [ "$sha" != "-" ]; then
    echo "$sha  $out" | sha256sum -c --status || {
      echo "download-model: $file SHA-256 mismatch; delete it and retry" >&2; exit 1; }
  fi
done
echo "download-model: $name ready in $dir"
