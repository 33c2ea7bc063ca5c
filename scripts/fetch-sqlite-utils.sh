#!/usr/bin/env bash
# Unpack a sqlite-utils with plugin support (>= 3.34: the prepare_connection hook) into a
# cache outside git, for the test of the wheel's sqlite-utils plugin. Debian 12 ships
# 3.30, which has no plugins; Debian 13 (trixie) ships 3.38. apt fetches trixie's package
# with a private configuration (its own source list and state under the cache, signatures
# checked against the Debian archive keyring); nothing on the system changes.
# It runs on Debian 12's python3-click, -click-default-group, -dateutil, -sqlite-fts4,
# -tabulate and -pluggy. Prints the directory holding usr/bin/sqlite-utils and
# usr/lib/python3/dist-packages/sqlite_utils.
set -euo pipefail
cache="${GPT2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt2-sqlite}"
dir="$cache/sqlite-utils-trixie"
if [ -f "$dir/root/usr/bin/sqlite-utils" ]; then echo "$dir/root"; exit 0; fi
apt="$dir/apt"
rm -rf "$dir"; mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir/root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$apt/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
      -o APT::Sandbox::User=root)
apt-get "${opts[@]}" -qq update >"$dir/apt.log" 2>&1 &&
  (cd "$dir" && apt-get "${opts[@]}" -qq download sqlite-utils >>"$dir/apt.log" 2>&1) || {
  echo "fetch-sqlite-utils: apt could not fetch trixie's sqlite-utils:" >&2; tail -n 5 "$dir/apt.log" >&2
  rm -rf "$dir"; exit 1; }
dpkg-deb -x "$dir"/sqlite-utils_*.deb "$dir/root"
rm -rf "$apt" "$dir"/sqlite-utils_*.deb
echo "$dir/root"
