#!/usr/bin/env bash
# Fetch sqlite-vec's loadable extension (npm sqlite-vec-linux-x64@0.1.6, which
# ships vec0.so) into a cache outside git, verifying the tarball's SHA-256 as
# scripts/fetch-vocab.sh does. Used by tests/test_embed.py.
# Usage: scripts/fetch-sqlite-vec.sh       -> prints the path of vec0.so
# Cache: $GPT2_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite
set -euo pipefail
cache="${GPT2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite}"
name=sqlite-vec-linux-x64 ver=0.1.6
sum=5b64731b24df9b3aaab4ef8c52aa4d04cec32be0da0de1d84c9c910c08eae0f8
tgz="$cache/$name-$ver.tgz" out="$cache/sqlite-vec-$ver"
mkdir -p "$cache"
if [ ! -f "$tgz" ] || ! echo "$sum  $tgz" | sha256sum -c --status; then
  command -v npm >/dev/null || { echo "fetch-sqlite-vec: npm is needed (apt-get install -y npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$name@$ver" >/dev/null 2>"$tmp/err") || {
    echo "fetch-sqlite-vec: npm pack $name@$ver failed: $(tail -n 3 "$tmp/err")" >&2; rm -rf "$tmp"; exit 1; }
  mv "$tmp/$name-$ver.tgz" "$tgz"; rm -rf "$tmp"
  echo "$sum  $tgz" | sha256sum -c --status || {
    echo "fetch-sqlite-vec: checksum mismatch for $tgz" >&2; rm -f "$tgz"; exit 1; }
fi
if [ ! -f "$out/vec0.so" ]; then
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/vec0.so
  mkdir -p "$out"
  mv "$tmp/package/vec0.so" "$out/vec0.so"
  rm -rf "$tmp"
fi
echo "$out/vec0.so"
