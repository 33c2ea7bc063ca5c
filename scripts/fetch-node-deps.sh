#!/usr/bin/env bash
# Install better-sqlite3 12 (the Node host the npm package is tested with) into a cache
# outside git, once: $GPT2_CACHE/node-deps (default ~/.cache/gpt2-sqlite/node-deps).
# Its prebuilt binary comes from a host this machine may not reach; npm then compiles
# it from source against the installed Node headers (/usr/include/node), a few minutes
# the first time. Prints the directory (a project with node_modules/better-sqlite3).
set -euo pipefail
cache="${GPT2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite}"
dir="$cache/node-deps"
version=12.4.1
works() { (cd "$dir" && node -e 'new (require("better-sqlite3"))(":memory:").prepare("select 1").get()') >/dev/null 2>&1; }
if [ -f "$dir/.version" ] && [ "$(cat "$dir/.version")" = "$version" ] && works; then
  echo "$dir"; exit 0
fi
command -v npm >/dev/null || { echo "fetch-node-deps: npm is needed (apt-get install -y npm)" >&2; exit 1; }
rm -rf "$dir"; mkdir -p "$dir"
echo '{"name": "gpt2-sqlite-node-deps", "version": "1.0.0", "private": true}' > "$dir/package.json"
[ -f /usr/include/node/common.gypi ] && export npm_config_nodedir=/usr
echo "fetch-node-deps: npm install better-sqlite3@$version (may compile it: a few minutes)" >&2
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error "better-sqlite3@$version" >npm.log 2>&1) || {
  echo "fetch-node-deps: npm install failed:" >&2; tail -n 20 "$dir/npm.log" >&2; exit 1; }
works || { echo "fetch-node-deps: better-sqlite3 installed but does not load" >&2; exit 1; }
echo "$version" > "$dir/.version"
echo "$dir"
