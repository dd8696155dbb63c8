local plugin_name = "confluent-consume"
local package_name = "kong-plugin-" .. plugin_name
local package_version = "0.1.0"
local rockspec_revision = "1"

package = package_name
version = package_version .. "-" .. rockspec_revision
supported_platforms = { "linux" }

-- Not published yet, so no remote URL: `make rock` (scripts/rock.sh) packs this rockspec with an archive of
-- the checkout into the source rock, and `luarocks build ./<source rock>` finds the archive beside the
-- rockspec. Once the repository is public this becomes its git URL and a `v<version>` tag. `luarocks make`
-- in a checkout ignores `source`.
source = {
  url = "file://" .. package_name .. "-" .. package_version .. ".tar.gz",
  dir = package_name .. "-" .. package_version,
}

description = {
  summary = "Kong plugins confluent-consume and kafka-consume: Kafka / Confluent Cloud topics over HTTP " ..
            "(GET and server-sent events)",
  license = "Apache-2.0",
}

dependencies = {
  "lua >= 5.1",
}

-- Every plugin name the rock registers, each with its modules (kong-plugin/kong/plugins/<name>/<module>.lua):
-- Kong's two names for its consume plugins; kafka-consume's handler and schema are built from
-- confluent-consume's modules. (luarocks loads a rockspec without Lua's globals: no ipairs.)
local plugins = {
  { plugin_name, { "handler", "schema", "variants", "consumers", "cursors", "http_get", "cursor_read",
                   "sse", "stream", "websocket", "respond", "client", "message_functions", "metrics",
                   "status_api" } },
  { "kafka-consume", { "handler", "schema", "status_api" } },
}

local lua_modules = {}
for i = 1, #plugins do
  local name, modules = plugins[i][1], plugins[i][2]
  for j = 1, #modules do
    lua_modules["kong.plugins." .. name .. "." .. modules[j]] =
      "kong-plugin/kong/plugins/" .. name .. "/" .. modules[j] .. ".lua"
  end
end

build = {
  -- The native module is a Rust cdylib; cargo builds it, luarocks installs it beside the Lua modules.
  -- The binary rock (`make rock`) carries the built module, so installing that needs no cargo.
  type = "command",
  -- luarocks exports its own CC/CFLAGS; without them the build reuses the cached librdkafka. Lua
  -- wants the library named after the module, cargo names it lib<name>.so: copy it (new inode).
  build_command = "env -u CC -u CFLAGS -u LDFLAGS -u LIBFLAG cargo build --release --locked " ..
                  "-p confluent-consume-native && mkdir -p target/lua && install -m 0755 " ..
                  "target/release/libconfluent_consume_native.so target/lua/confluent_consume_native.so",
  install = {
    lua = lua_modules,
    lib = {
      confluent_consume_native = "target/lua/confluent_consume_native.so",
    },
  },
}
