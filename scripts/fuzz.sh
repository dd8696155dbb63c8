#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz). Each run starts from the committed corpus
# fuzz/corpus/<target>/ and writes what it finds to fuzz/work/<target>/ (ignored); a crash fails the run
# and leaves its input in fuzz/artifacts/<target>/ (reproduce: scripts/fuzz.sh repro <target> <file>).
#   scripts/fuzz.sh smoke        each target FUZZ_SMOKE_SECONDS (25) seconds: make fuzz-smoke, make test
#   scripts/fuzz.sh long [S]     each target S seconds (default 600): make fuzz
#   scripts/fuzz.sh cmin         folds fuzz/work/<target>/ into a minimized fuzz/corpus/<target>/
# Prints one line per target with its execution count, then "N passed, N failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

TARGETS=(record_encoding cursor query config client_frame registry_decode)
# The toolchain is stable: cargo fuzz's -Z flags need RUSTC_BOOTSTRAP. No sanitizer (-s none): cargo fuzz
# hands its AddressSanitizer flags to the C builds too, and librdkafka's configure step cannot link then.
# The targets still fail on any panic (all of this crate's failures are panics: its code is safe Rust).
FUZZ=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
FLAGS=(-O -s none)

mode=${1:-smoke}
case "$mode" in
  smoke) seconds=${FUZZ_SMOKE_SECONDS:-25} ;;
  long) seconds=${2:-600} ;;
  cmin) ;;
  repro) exec "${FUZZ[@]}" run "${FLAGS[@]}" "$2" "$3" ;;
  *) echo "usage: scripts/fuzz.sh smoke | long [seconds] | cmin | repro <target> <file>" >&2; exit 2 ;;
esac

if ! "${FUZZ[@]}" build "${FLAGS[@]}"; then
  echo "fuzz: the targets do not build"
  echo "0 passed, ${#TARGETS[@]} failed"
  exit 1
fi

passed=0 failed=0
for target in "${TARGETS[@]}"; do
  mkdir -p "work/$target" "corpus/$target"
  if [ "$mode" = cmin ]; then
    cp -n "work/$target"/* "corpus/$target"/ 2>/dev/null
    if "${FUZZ[@]}" cmin "${FLAGS[@]}" "$target" "corpus/$target" >"work/$target.log" 2>&1; then
      echo "fuzz $target: corpus of $(ls "corpus/$target" | wc -l) inputs, $(du -sk "corpus/$target" | cut -f1) KiB"
      passed=$((passed + 1))
    else
      tail -20 "work/$target.log"; failed=$((failed + 1))
    fi
    continue
  fi
  "${FUZZ[@]}" run "${FLAGS[@]}" "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"work/$target.log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "work/$target.log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "work/$target.log" | grep -oE '[0-9]+$' | tail -1)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz $target: ok, ${runs:-?} executions in ${seconds} s (${rate:-?}/s)"
    passed=$((passed + 1))
  else
    echo "fuzz $target: FAILED after ${runs:-?} executions (exit $rc); input in fuzz/artifacts/$target/"
    grep -E "panicked at|^thread|ERROR: libFuzzer" -A 2 "work/$target.log" | head -20
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
