#!/usr/bin/env bash
# Packs the plugin into target/rocks/ (`make rock`):
#   <package>-<version>.linux-x86_64.rock  binary rock: the Lua modules and the prebuilt native module.
#                                          `luarocks install ./<file>` needs no Rust toolchain and no compiler.
#   <package>-<version>.src.rock           source rock: the rockspec and an archive of the checkout; building
#                                          it runs cargo, as `luarocks make` does.
# The binary rock is `luarocks pack` of the plugin installed by `luarocks make` into a scratch tree, the way
# Kong's docs package a custom plugin. Linux x86_64 only; see README "Install in Kong" for what the native
# module needs at run time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

ROCKSPEC="kong-plugin-confluent-consume-0.1.0-1.rockspec"
OUT="target/rocks"
TREE="target/rock-tree"
LUAROCKS=(luarocks --lua-version=5.1)

# package, version (<upstream>-<revision>), the source archive's name and its top directory, from the
# rockspec itself
read -r PACKAGE VERSION ARCHIVE SOURCE_DIR < <(ROCKSPEC="$ROCKSPEC" luajit -e '
  local spec = {}
  local chunk = assert(loadfile(os.getenv("ROCKSPEC")))
  setfenv(chunk, spec)()
  print(spec.package, spec.version, (spec.source.url:gsub("^file://", "")), spec.source.dir)')
[[ "$ARCHIVE" != */* ]] || { echo "rock.sh: the rockspec's source.url must name a file in $OUT" >&2; exit 1; }

rm -rf "$OUT" "$TREE"
mkdir -p "$OUT"

# Binary rock. `luarocks make` runs the rockspec's build command (cargo; a no-op after `make build`).
"${LUAROCKS[@]}" --tree "$TREE" make "$ROCKSPEC"
(cd "$OUT" && "${LUAROCKS[@]}" --tree "$ROOT/$TREE" pack "$PACKAGE" "$VERSION")
rm -rf "$TREE"

# Source rock: a zip of the rockspec and the archive its source.url names, as `luarocks pack <rockspec>`
# makes one (that command fetches the source from a scratch directory, where a relative file:// URL
# cannot point). `luarocks build ./<src.rock>` unpacks both side by side and finds the archive. The archive
# holds the tracked files as they are now (committed or not; untracked files are left out), under the
# directory the rockspec's source.dir names. Needs a git checkout.
STAGE="target/rock-src"
rm -rf "$STAGE" && mkdir -p "$STAGE"
snapshot=$(git stash create)
git archive --format=tar.gz --prefix="$SOURCE_DIR/" -o "$STAGE/$ARCHIVE" "${snapshot:-HEAD}"
cp "$ROCKSPEC" "$STAGE/"
(cd "$STAGE" && zip -q -X "$ROOT/$OUT/$PACKAGE-$VERSION.src.rock" "$ROCKSPEC" "$ARCHIVE")
rm -rf "$STAGE"

ls -l "$OUT"/*.rock
