#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine; fast when everything is present.
set -euo pipefail

PACKAGES=(
  nginx-light libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson
  luajit2 libluajit2-5.1-dev lua-busted lua-socket lua-yaml luarocks
  socat curl pkg-config libssl-dev build-essential
  lua-nginx-websocket  # lua-resty-websocket (Kong bundles it as resty.websocket.*): websocket mode
  python3-websockets  # the WebSocket clients of the specs (spec/helpers/ws_client.py)
  python3-venv  # the virtualenv of Confluent's serializers (tools/schema-registry/venv.sh) with Debian's python3
  chromium
  zip unzip binutils git  # make rock (git archive, zip) and spec/14 (unzip, readelf, objdump)
  prometheus  # spec/37 scrapes the host's Status API with a Prometheus of its own, on a loopback port
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian enables nginx's default site on install; the project never uses the system instance.
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  # Likewise Prometheus: spec/37 starts its own; the system service would scrape nothing of ours.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required: https://rustup.rs" >&2; exit 1; }

# The fuzz targets (scripts/fuzz.sh) run under cargo fuzz.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi

# Confluent's serializers (confluent-kafka with Avro, Protobuf and JSON Schema) and the project's Schema
# Registry run in a virtualenv of their own, cached outside the work tree (tools/schema-registry/venv.sh).
"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/schema-registry/venv.sh" install

# The browser spec (spec/16-browser_spec.lua) drives Debian's chromium through playwright-core.
BROWSER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/spec/browser"
if [ ! -d "$BROWSER_DIR/node_modules" ] || [ "$BROWSER_DIR/package-lock.json" -nt "$BROWSER_DIR/node_modules" ]; then
  command -v npm >/dev/null || { echo "npm (Node.js 20+) is required for spec/browser" >&2; exit 1; }
  (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund)
fi
