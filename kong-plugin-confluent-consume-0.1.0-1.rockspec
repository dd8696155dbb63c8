local plugin_name = "confluent-consume"
local package_name = "kong-plugin-" .. plugin_name
local package_version = "0.1.0"
local rockspec_revision = "1"

package = package_name
version = package_version .. "-" .. rockspec_revision
supported_platforms = { "linux" }

source = {
  url = "git+https://github.com/kong-plugin-confluent-consume/kong-plugin-confluent-consume.git",
  tag = package_version,
}

description = {
  summary = "Kong plugin serving Kafka / Confluent Cloud topics over HTTP (GET and server-sent events)",
  license = "Apache-2.0",
}

dependencies = {
  "lua >= 5.1",
}

build = {
  -- The native module is a Rust cdylib; cargo builds it, luarocks installs it beside the Lua modules.
  type = "command",
  -- luarocks exports its own CC/CFLAGS; without them the build reuses the cached librdkafka. Lua
  -- wants the library named after the module, cargo names it lib<name>.so: copy it (new inode).
  build_command = "env -u CC -u CFLAGS -u LDFLAGS -u LIBFLAG cargo build --release --locked " ..
                  "-p confluent-consume-native && mkdir -p target/lua && install -m 0755 " ..
                  "target/release/libconfluent_consume_native.so target/lua/confluent_consume_native.so",
  install = {
    lua = {
      ["kong.plugins." .. plugin_name .. ".handler"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/handler.lua",
      ["kong.plugins." .. plugin_name .. ".schema"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/schema.lua",
      ["kong.plugins." .. plugin_name .. ".consumers"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/consumers.lua",
      ["kong.plugins." .. plugin_name .. ".cursors"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/cursors.lua",
      ["kong.plugins." .. plugin_name .. ".http_get"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/http_get.lua",
      ["kong.plugins." .. plugin_name .. ".sse"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/sse.lua",
      ["kong.plugins." .. plugin_name .. ".respond"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/respond.lua",
      ["kong.plugins." .. plugin_name .. ".client"] = "kong-plugin/kong/plugins/" .. plugin_name .. "/client.lua",
    },
    lib = {
      confluent_consume_native = "target/lua/confluent_consume_native.so",
    },
  },
}
