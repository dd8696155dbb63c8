#!/usr/bin/env bash
# The virtualenv with Confluent's serializers (requirements.txt beside this file), cached outside the work
# tree so a fresh checkout (CI's, a new worktree) reuses it; CC_SR_VENV overrides where it lives.
#   venv.sh install   make it, or remake it when requirements.txt changed (fast when it is current)
#   venv.sh python    print the path of its python
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CC_SR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kong-plugin-confluent-consume/sr-venv}"
STAMP="$VENV/requirements.sha256"

case "${1:-}" in
  install)
    wanted="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
      exit 0
    fi
    echo "installing Confluent's serializers into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
      -r "$HERE/requirements.txt"
    echo "$wanted" >"$STAMP"  # written last: an interrupted install is redone next time
    ;;
  python)
    echo "$VENV/bin/python"
    ;;
  *)
    echo "usage: $0 install|python" >&2
    exit 2
    ;;
esac
