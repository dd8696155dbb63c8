#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine; fast when everything is present.
set -euo pipefail

PACKAGES=(
  nginx-light libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson
  luajit2 libluajit2-5.1-dev lua-busted lua-socket lua-yaml luarocks
  socat curl pkg-config libssl-dev build-essential
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
fi

command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required: https://rustup.rs" >&2; exit 1; }
