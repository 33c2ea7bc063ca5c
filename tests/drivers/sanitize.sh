#!/usr/bin/env bash
# `make test-sanitize`: the whole pytest suite against an ASan + UBSan build of the
# extension, with leak detection.
#
#   tests/drivers/sanitize.sh ROOT SANDIR PYTHON [pytest args...]   (default: tests)
#
# SANDIR/tree/build/gpt2.so is the instrumented extension (built by mk/hardening.mk).
# SANDIR/tree mirrors ROOT with symlinks (tests, scripts, ext, ...), so conftest.py's
# ROOT (from its unresolved __file__) is SANDIR/tree and its SO the instrumented build;
# build/gpt2.so is left alone.
#
# /usr/bin/python3 is not instrumented: the ASan runtime (which carries UBSan's too)
# is preloaded. Tools the tests run that never load the extension (cc, node, npm, curl) run
# without it, through wrappers in SANDIR/bin. Reports go to SANDIR/logs;
# tests/drivers/san_report.py then fails on any sanitizer error and on any leak with
# an extension frame (Python's own leaks at exit are ignored). tests/drivers/san_plugin.py
# closes connections a test left open before the leak check.
set -uo pipefail
root=$(cd "$1" && pwd) san=$(cd "$2" && pwd) py=$3
shift 3
clang=${CLANG:-clang}
rt=$($clang -print-file-name=libclang_rt.asan-x86_64.so)
[ -f "$rt" ] || { echo "sanitize: no ASan runtime at $rt (apt-get install libclang-rt-14-dev)" >&2; exit 2; }

mkdir -p "$san/tree" "$san/bin"
for e in "$root"/* ; do
  name=$(basename "$e")
  [ "$name" = build ] && continue
  ln -sfn "$e" "$san/tree/$name"
done
for tool in cc gcc clang node npm curl; do
  real=$(command -v "$tool" || true)
  [ -n "$real" ] || continue
  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" >"$san/bin/$tool"
  chmod +x "$san/bin/$tool"
done
rm -rf "$san/logs" && mkdir -p "$san/logs"

export LD_PRELOAD=$rt
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:abort_on_error=1:exitcode=0:log_path=$san/logs/asan:detect_odr_violation=0"
export LSAN_OPTIONS="max_leaks=0:report_objects=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)}
export PATH="$san/bin:$PATH"
export PYTHONPATH="$root/tests/drivers${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

cd "$san/tree"
[ $# -gt 0 ] || set -- tests
"$py" -m pytest -p san_plugin -p no:cacheprovider -q "$@"
rc=$?
unset LD_PRELOAD
"$py" "$root/tests/drivers/san_report.py" "$san/logs"
rep=$?
echo "test-sanitize: pytest exit $rc, sanitizer report exit $rep"
[ $rc -eq 0 ] && [ $rep -eq 0 ]
