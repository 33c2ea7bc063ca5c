#!/usr/bin/env bash
# Download a GPT-2 checkpoint from Hugging Face into DIR (default MODELS_DIR/NAME).
#   scripts/download-model.sh [gpt2|gpt2-medium|gpt2-large|gpt2-xl|distilgpt2] [DIR]
# Env: MODELS_DIR  where NAME/ goes (default: models/ in the repository; under the
#                  current directory when installed as gpt2-download)
#      HF_ENDPOINT the Hub (default https://huggingface.co)
# With a progress bar (curl retries and resumes a broken transfer); verifies each
# file's size and, for model.safetensors, the SHA-256 that the Hub lists for it.
# The files are downloaded into a temporary directory next to the target and moved
# into DIR only when all four are complete and verified: on any failure or
# interrupt nothing is left behind (a DIR that exists is always loadable).
# Exit 2 when the Hub cannot be reached (one line on stderr), 1 on any other failure.
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
root=${MODELS_DIR:-"$base/models"}
dir=${2:-"$root/$name"}
root=$(dirname "$dir")   # the temporary download sits next to DIR

# One small request first, before anything is created, so that no route to the
# Hub is said in one line.
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
') || { echo "download-model: $hub returned an unreadable file listing for $repo" >&2; exit 1; }

made_root=
[ -d "$root" ] || made_root=1
mkdir -p "$root"
tmp=$(mktemp -d "$root/.$name.download.XXXXXX")
cleanup() {
  rm -rf "$tmp"
  [ -z "$made_root" ] || rmdir "$root" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

files=(config.json vocab.json merges.txt model.safetensors)
for file in "${files[@]}"; do
  read -r _ size sha < <(printf '%s\n' "$listing" | awk -v f="$file" '$1 == f') || {
    echo "download-model: $repo has no $file" >&2; exit 1; }
  have="$dir/$file" out="$tmp/$file"
  if [ -f "$have" ] && [ "$(stat -c %s "$have")" = "$size" ]; then
    echo "$file: already complete"
    out=$have
  else
    echo "$file ($size bytes)"
    curl -fL --retry 3 -C - --progress-bar -o "$out" "$hub/$repo/resolve/main/$file" || {
      echo "download-model: downloading $file failed; nothing kept" >&2; exit 1; }
  fi
  got=$(stat -c %s "$out")
  [ "$got" = "$size" ] || { echo "download-model: $file is $got bytes, expected $size" >&2; exit 1; }
  if [ "$sha" != "-" ]; then
    echo "$sha  $out" | sha256sum -c --status || {
      echo "download-model: $file SHA-256 mismatch" >&2; exit 1; }
  fi
done

# All four are here and verified: into place (one rename when models/NAME is new).
if [ -e "$dir" ]; then
  for file in "${files[@]}"; do
    [ ! -f "$tmp/$file" ] || mv -f "$tmp/$file" "$dir/$file"
  done
else
  chmod 755 "$tmp"
  mv "$tmp" "$dir"
fi
made_root=
echo "download-model: $name ready in $dir"
