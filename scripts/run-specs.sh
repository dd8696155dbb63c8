#!/usr/bin/env bash
# Runs busted spec files under LuaJIT from the repository root; prints one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CC_ROOT="$PWD"
export LUA_PATH="$PWD/?.lua;$PWD/?/init.lua;$PWD/kong-plugin/?.lua;$PWD/host/lua/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;"
passed=0 failed=0
for spec in "$@"; do
  echo "== $spec"
  out=$(luajit /usr/bin/busted -o plainTerminal "$spec" 2>&1)
  rc=$?
  echo "$out"
  line=$(echo "$out" | grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' | tail -1)
  s=$(echo "$line" | grep -oE '^[0-9]+' || echo 0)
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failures? \/ ([0-9]+) errors?.*/\1 \2/' | awk '{print $1+$2}')
  [ -n "$line" ] || { s=0; f=1; }
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; fi
  passed=$((passed + s)); failed=$((failed + ${f:-0}))
done
echo "specs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
