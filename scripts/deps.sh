#!/usr/bin/env bash
# Check (and, as root, install) the Debian packages the build, tests and demo need.
# Not root: prints the exact apt-get line and exits 1.
set -euo pipefail
pkgs=(gcc make pkg-config sqlite3 libsqlite3-dev libopenblas-dev libpcre2-dev
      libjansson-dev python3 python3-numpy python3-regex python3-pytest curl ca-certificates)
extra=("$@")   # e.g. scripts/deps.sh python3-torch clang
missing=()
for p in "${pkgs[@]}" "${extra[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
