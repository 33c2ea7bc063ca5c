#!/usr/bin/env bash
# Link a self-contained copy of the extension: every library it needs outside glibc
# is either linked in statically (when Debian ships a position-independent archive
# of it that needs nothing but glibc) or copied beside it and found through an
# $ORIGIN run path. Which libraries, and which way, is read from the dynamic build's
# ELF headers (readelf -d, ldd), so it follows the Makefile's LDLIBS.
#
#   scripts/selfcontained.sh DYNAMIC_SO OUTDIR -- CC ARGS...
#
# DYNAMIC_SO  the ordinary build (build/gpt2.so), read for its dependencies
# OUTDIR      receives gpt2.so, the bundled libraries and licenses/ (their copyright files)
# CC ARGS     the Makefile's compile-and-link command without -o; each -lNAME of a
#             library taken statically is replaced by its archive
set -euo pipefail
die() { echo "selfcontained: $*" >&2; exit 1; }
[ $# -ge 4 ] && [ "$3" = "--" ] || die "usage: $0 DYNAMIC_SO OUTDIR -- CC ARGS..."
so=$1 out=$2; shift 3
cc=$1; shift
[ -f "$so" ] || die "$so: no such file"

# The C library's own objects: present on every glibc system, never bundled.
is_glibc() {
  case "$1" in
    linux-vdso.so.*|ld-linux*.so.*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|\
    librt.so.*|libresolv.so.*|libutil.so.*|libanl.so.*) return 0 ;;
  esac
  return 1
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
# "soname path" for every library ldd resolves (transitively)
resolved() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo 'int gpt2_selfcontained_probe(void) { return 0; }' > "$tmp/probe.c"

declare -A path_of=() static_of=()
while read -r name path; do path_of[$name]=$path; done < <(resolved "$so")

# A direct dependency goes static when its archive links whole into a shared object
# (all of it position-independent) and its shared build needs only glibc.
for name in $(needed "$so"); do
  is_glibc "$name" && continue
  path=${path_of[$name]:-}
  [ -n "$path" ] || die "$so needs $name, which ldd does not resolve"
  archive="$(dirname "$(readlink -f "$path")")/${name%%.so*}.a"
  [ -f "$archive" ] || continue
  only_glibc=1
  for dep in $(needed "$path"); do is_glibc "$dep" || only_glibc=0; done
  [ $only_glibc = 1 ] || continue
  if "$cc" -shared -fPIC -o "$tmp/probe.so" "$tmp/probe.c" \
       -Wl,--whole-archive "$archive" -Wl,--no-whole-archive -lm -pthread 2>/dev/null; then
    static_of[$name]=$archive
  fi
done

# Everything else outside glibc (direct or transitive) is copied beside gpt2.so.
bundled=()
for name in "${!path_of[@]}"; do
  is_glibc "$name" || [ -n "${static_of[$name]:-}" ] || bundled+=("$name")
done

args=()
for a in "$@"; do
  for name in "${!static_of[@]}"; do
    [ "$a" = "-l$(basename "${name%%.so*}" | sed 's/^lib//')" ] && a=${static_of[$name]}
  done
  args+=("$a")
done
# Archive symbols stay private to gpt2.so (no clash with a host's own copy).
args+=(-Wl,--exclude-libs,ALL)
# DT_RPATH (not RUNPATH): it also serves the bundled libraries' own dependencies.
[ ${#bundled[@]} -eq 0 ] || args+=("-Wl,-rpath,\$ORIGIN" -Wl,--disable-new-dtags)

rm -rf "$out"; mkdir -p "$out/licenses"
"$cc" "${args[@]}" -o "$out/gpt2.so"
strip --strip-debug "$out/gpt2.so"
for name in "${bundled[@]}"; do cp -L "${path_of[$name]}" "$out/$name"; done

# Each library's Debian copyright file travels with the copy of it.
for name in "${!static_of[@]}" "${bundled[@]}"; do
  real=$(readlink -f "${path_of[$name]}")
  pkg=$(dpkg -S "$real" 2>/dev/null | head -n 1 | cut -d: -f1) || true
  if [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ]; then
    cp "/usr/share/doc/$pkg/copyright" "$out/licenses/$pkg.copyright"
  else
    echo "selfcontained: warning: no copyright file found for $name" >&2
  fi
done

# What the result needs outside glibc must be exactly the copies beside it.
for name in $(needed "$out/gpt2.so"); do
  is_glibc "$name" || [ -f "$out/$name" ] || die "$out/gpt2.so still needs $name"
done
statics=$(for n in "${!static_of[@]}"; do echo "${n%%.so*}"; done | sort | paste -sd' ')
echo "selfcontained: $out/gpt2.so: static: ${statics:-none}; bundled: ${bundled[*]:-none}"
