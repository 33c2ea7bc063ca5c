#!/usr/bin/env bash
# Run the libFuzzer targets built by mk/hardening.mk.
#
#   tests/fuzz/run.sh replay DIR TARGET...   run every file of tests/fuzz/regressions/TARGET
#                                            and of DIR/corpus/TARGET once; fail on a crash
#   tests/fuzz/run.sh fuzz DIR TARGET...     fuzz each target for $FUZZ_SECONDS (default 10)
#                                            from DIR/work/TARGET (kept between runs, so
#                                            long runs accumulate), the seeds and the
#                                            regressions; print executions per target and
#                                            append them to DIR/stats.tsv
#
# A crash leaves its input in DIR/crashes/TARGET/ and makes this script fail. To keep
# it as a regression test: fix the bug, then
#   cp DIR/crashes/TARGET/crash-... tests/fuzz/regressions/TARGET/<short-name>
# (`make fuzz-replay` and `make fuzz` replay every file there).
set -uo pipefail
mode=$1 dir=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-10}
jobs=${FUZZ_JOBS:-1}

max_len() {
  case $1 in
    safetensors|layout) echo 65536 ;;
    vocab) echo 16384 ;;
    merges|config|tokenize) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

dict() {
  case $1 in
    config|safetensors|layout|vocab) echo "-dict=$here/dicts/json.dict" ;;
    merges) echo "-dict=$here/dicts/merges.dict" ;;
    tokenize) echo "-dict=$here/dicts/tokenize.dict" ;;
    sql) echo "-dict=$here/dicts/sql.dict" ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fail=0
total=0
for t in "$@"; do
  bin="$dir/bin/fuzz_$t"
  reg="$here/regressions/$t"
  mkdir -p "$reg" "$dir/work/$t" "$dir/crashes/$t" "$dir/logs"
  case $mode in
  replay)
    files=()
    while IFS= read -r -d '' f; do files+=("$f"); done < \
      <(find "$reg" "$dir/corpus/$t" -type f ! -name '.*' -print0 2>/dev/null)
    if [ ${#files[@]} -eq 0 ]; then continue; fi
    if "$bin" -runs=1 "${files[@]}" >"$dir/logs/replay-$t.log" 2>&1; then
      printf 'replay %-12s %4d inputs ok\n' "$t" "${#files[@]}"
    else
      printf 'replay %-12s FAILED, see %s\n' "$t" "$dir/logs/replay-$t.log"
      grep -m3 -E 'ERROR|FZ_CHECK|runtime error|Running:' "$dir/logs/replay-$t.log" | sed 's/^/    /'
      fail=1
    fi
    ;;
  fuzz)
    log="$dir/logs/fuzz-$t.log"
    par=()
    if [ "$jobs" -gt 1 ]; then # -fork: N processes share the corpus, one log
      par=(-fork="$jobs" -ignore_crashes=0)
    fi
    # shellcheck disable=SC2046
    "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=2560 \
      -max_len="$(max_len "$t")" $(dict "$t") "${par[@]}" \
      -artifact_prefix="$dir/crashes/$t/" "$dir/work/$t" "$dir/corpus/$t" "$reg" \
      >"$log" 2>&1
    rc=$?
    execs=$(grep -h 'stat::number_of_executed_units' "$log" 2>/dev/null |
      awk '{s += $2} END {print s + 0}')
    if [ "$jobs" -gt 1 ]; then # -fork reports a running total: "#N ... exec/s"
      execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    total=$((total + execs))
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    printf 'fuzz   %-12s %10d execs in %ss  cov %s  %s\n' "$t" "$execs" "$seconds" "${cov:-?}" \
      "$([ $rc -eq 0 ] && echo ok || echo "CRASH (exit $rc), see $log")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$seconds" "$execs" "$rc" >>"$dir/stats.tsv"
    if [ $rc -ne 0 ]; then
      grep -m5 -E 'ERROR|FZ_CHECK|runtime error|Test unit written' "$log" | sed 's/^/    /'
      fail=1
    fi
    ;;
  esac
done
if [ "$mode" = fuzz ]; then
  echo "fuzz   total        $total execs"
fi
exit $fail
