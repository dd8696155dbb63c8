#!/usr/bin/env bash
# Runs every test: Rust unit tests, a short run of each fuzz target, Lua unit specs, and the integration
# specs against a real tansu broker and real nginx hosts. Prints one "N passed, N failed" line at the end;
# exit status tells.
#   scripts/run-tests.sh              everything
#   scripts/run-tests.sh integration  only the integration specs (spec/1*, spec/3* and spec/4*: the features
#                                     added after the core, from message functions on)
#   scripts/run-tests.sh faults       only the fault, leak and hostile-input specs (spec/2*)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_DIR="$PWD/.run/test"
BROKER_DIR="$RUN_DIR/broker"
export CC_TEST_BROKER_PORT="${CC_TEST_BROKER_PORT:-19092}"
export CC_TEST_MEMORY_BROKER_PORT="${CC_TEST_MEMORY_BROKER_PORT:-19093}"
export CC_TEST_RUN_DIR="$RUN_DIR"

rust_passed=0 rust_failed=0
if [ "${1:-all}" = all ]; then
  echo "== cargo test"
  out=$(cargo test --release --locked --workspace 2>&1)
  echo "$out" | grep -E "^test |test result" || true
  rust_passed=$(echo "$out" | awk '/^test result:/ {s += $4} END {print s + 0}')
  rust_failed=$(echo "$out" | awk '/^test result:/ {s += $6} END {print s + 0}')
  echo "$out" | grep -q "^test result" || { echo "$out" | tail -20; rust_failed=1; }
fi

# The fuzz targets, each for a short run: a crash on any input is a failure.
fuzz_passed=0 fuzz_failed=0
if [ "${1:-all}" = all ]; then
  echo "== fuzz smoke"
  out=$(scripts/fuzz.sh smoke 2>&1)
  echo "$out" | grep -E "^fuzz " || echo "$out" | tail -20
  fuzz_passed=$(echo "$out" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1/p')
  fuzz_failed=$(echo "$out" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\2/p')
fi

# Integration specs share two brokers. Most use sqlite storage: tansu's memory storage drops the rest of
# a record batch when a fetch starts inside it, which resuming from a committed offset does. Its sqlite
# storage cannot serve snappy batches, so the compression specs use memory storage.
MEMORY_BROKER_DIR="$RUN_DIR/broker-memory"
stop_brokers() {
  scripts/broker.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1
  scripts/broker.sh stop --dir "$MEMORY_BROKER_DIR" >/dev/null 2>&1
}
stop_brokers
rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR"
trap stop_brokers EXIT
if ! scripts/broker.sh start --dir "$BROKER_DIR" --port "$CC_TEST_BROKER_PORT" --storage sqlite ||
   ! scripts/broker.sh start --dir "$MEMORY_BROKER_DIR" --port "$CC_TEST_MEMORY_BROKER_PORT" --storage memory; then
  echo "0 passed, 1 failed"
  exit 1
fi

case "${1:-all}" in
  all) specs=(spec/*_spec.lua) ;;
  integration) specs=(spec/1*_spec.lua spec/3*_spec.lua spec/4*_spec.lua) ;;
  faults) specs=(spec/2*_spec.lua) ;;
  *) echo "unknown selection: $1" >&2; exit 2 ;;
esac
# shown as it runs; `tee /dev/stderr` would reopen (and truncate) a log file that stderr goes to
scripts/run-specs.sh "${specs[@]}" 2>&1 | tee "$RUN_DIR/specs.log"
spec_out=$(tail -1 "$RUN_DIR/specs.log")
spec_passed=$(echo "$spec_out" | sed -nE 's/.* ([0-9]+) passed, ([0-9]+) failed/\1/p')
spec_failed=$(echo "$spec_out" | sed -nE 's/.* ([0-9]+) passed, ([0-9]+) failed/\2/p')

passed=$(( ${rust_passed:-0} + ${fuzz_passed:-0} + ${spec_passed:-0} ))
failed=$(( ${rust_failed:-0} + ${fuzz_failed:-1} + ${spec_failed:-1} ))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
