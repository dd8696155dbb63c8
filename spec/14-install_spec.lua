-- README "Install in Kong" and "Quick start", run verbatim: `make rock` builds the rocks; the binary rock's
-- `luarocks install` runs on what looks like a Kong node without a Rust toolchain (no cargo, rustc or C
-- compiler on PATH, a luarocks for Lua 5.1 whose only tree is fresh); the host on 8000/8001 then loads the
-- plugin from that tree alone and serves the quick start, a GET with records and a stream with records,
-- from a broker on 9092. Also: the native module needs exactly the libraries the README lists.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"


local function readme_section(title)
  local readme = assert(io.open(helpers.ROOT .. "/README.md")):read("*a")
  return assert(readme:match("\n## " .. title:gsub("%p", "%%%0") .. "\n(.-)\n## "),
                "README has a section '## " .. title .. "'")
end


-- The lines of the sh blocks of `text` that start with `prefix`, continuation lines joined.
local function commands(text, prefix)
  local list = {}
  for block in text:gmatch("```sh\n(.-)```") do
    for line in (block:gsub("\\\n%s*", "")):gmatch("[^\n]+") do
      if line:sub(1, #prefix) == prefix then
        list[#list + 1] = line
      end
    end
  end
  return list
end


local function port_free(port)
  return not helpers.sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. port .. "' 2>/dev/null")
end


local sh_ok = helpers.sh_ok


-- Files (relative paths) under `dir`, sorted.
local function files_under(dir)
  local list = {}
  for path in sh_ok("cd " .. dir .. " && find . -type f | sort"):gmatch("[^\n]+") do
    list[#list + 1] = path:sub(3)
  end
  return list
end


local function set_of(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return set
end


describe("installation", function()
  local install_section = readme_section("Install in Kong")
  local rocks_dir = helpers.ROOT .. "/target/rocks"
  local node = helpers.RUN_DIR .. "/kong-node"   -- the pretend Kong node: HOME, PATH dir, luarocks tree
  local tree = node .. "/tree"
  local node_env                                 -- `env -i ...` prefix that runs a command on it
  local broker_dir = helpers.RUN_DIR .. "/broker-9092"
  local install_output
  local host

  lazy_setup(function()
    for _, port in ipairs({ 8000, 8001, 9092 }) do
      assert(port_free(port), "port " .. port .. " is in use (is `make run` running?); the quick start needs it")
    end

    -- README "From source": the build command, verbatim, from the checkout.
    local build = commands(install_section, "make ")
    assert.same({ "make rock" }, build)
    sh_ok("cd " .. helpers.ROOT .. " && " .. build[1])

    -- The node: every command of this machine except the Rust toolchain and the C toolchain, a HOME of its
    -- own whose luarocks defaults to Lua 5.1 (as Kong's) with one empty tree, and nothing else inherited.
    sh_ok("rm -rf " .. node .. " && mkdir -p " .. node .. "/bin " .. node .. "/home/.luarocks " .. tree)
    sh_ok("for f in /usr/local/sbin/* /usr/local/bin/* /usr/sbin/* /usr/bin/* /sbin/* /bin/*; do " ..
          "n=${f##*/}; case $n in cargo*|rustc|rustdoc|rustup|rust-*|cc|c++|c89*|c99*|cpp*|gcc*|g++*|" ..
          "clang*|*-gcc*|*-g++*|*-cpp*|ld|ld.*|*-ld|*-ld.*|as|*-as|make|cmake) continue ;; esac; " ..
          "[ -x \"$f\" ] && [ ! -e " .. node .. "/bin/$n ] && ln -s \"$f\" " .. node .. "/bin/$n; done; true")
    local file = assert(io.open(node .. "/home/.luarocks/default-lua-version.lua", "w"))
    file:write('return "5.1"\n')
    file:close()
    file = assert(io.open(node .. "/home/.luarocks/config-5.1.lua", "w"))
    file:write(string.format("rocks_trees = { { name = \"node\", root = %q } }\n", tree))
    file:close()
    node_env = string.format("env -i HOME=%s/home PATH=%s/bin LANG=C.UTF-8 ", node, node)

    -- README "Install in Kong": the install command, verbatim, in the directory holding the rock.
    local install = commands(install_section, "luarocks ")
    assert.equal(1, #install)
    install_output = sh_ok("cd " .. rocks_dir .. " && " .. node_env .. install[1])

    sh_ok(helpers.ROOT .. "/scripts/broker.sh stop --dir " .. broker_dir .. "; rm -rf " .. broker_dir)
    sh_ok(helpers.ROOT .. "/scripts/broker.sh start --dir " .. broker_dir .. " --port 9092")
    sh_ok(helpers.ROOT .. "/scripts/broker.sh topic --port 9092 my-topic 3")
    -- Only the tree's Lua modules and native module: none of the checkout's.
    -- check_client_abort: the README's kong.conf turns nginx_proxy_lua_check_client_abort on
    host = helpers.start_host({ workers = 2, proxy_port = 8000, admin_port = 8001, check_client_abort = true,
                                plugin_paths = { tree .. "/share/lua/5.1" }, cpath = tree .. "/lib/lua/5.1" })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    helpers.sh(helpers.ROOT .. "/scripts/broker.sh stop --dir " .. broker_dir)
  end)

  it("make rock writes the binary rock and the source rock", function()
    local rocks = files_under(rocks_dir)
    assert.same({ "kong-plugin-confluent-consume-0.1.0-1.linux-x86_64.rock",
                  "kong-plugin-confluent-consume-0.1.0-1.src.rock" }, rocks)
    local binary = sh_ok("unzip -Z1 " .. rocks_dir .. "/" .. rocks[1])
    assert.matches("\nlib/confluent_consume_native.so\n", "\n" .. binary)
    assert.matches("\nlua/kong/plugins/confluent%-consume/handler.lua\n", "\n" .. binary)
    local source = {}
    for f in sh_ok("unzip -Z1 " .. rocks_dir .. "/" .. rocks[2]):gmatch("[^\n]+") do source[#source + 1] = f end
    table.sort(source)
    assert.same({ "kong-plugin-confluent-consume-0.1.0-1.rockspec", "kong-plugin-confluent-consume-0.1.0.tar.gz" },
                source)
    -- the rockspec's source.url (file://<archive>) resolves once luarocks unpacks the source rock
    local scratch = helpers.RUN_DIR .. "/unpack-src-rock"
    sh_ok("rm -rf " .. scratch .. " && mkdir -p " .. scratch .. " && cd " .. scratch ..
          " && luarocks --lua-version=5.1 unpack " .. rocks_dir .. "/" .. rocks[2])
    sh_ok("cmp " .. helpers.ROOT .. "/src/lib.rs " .. scratch ..
          "/kong-plugin-confluent-consume-0.1.0-1/kong-plugin-confluent-consume-0.1.0/src/lib.rs")
  end)

  it("the node has no Rust toolchain and no C compiler", function()
    for _, tool in ipairs({ "cargo", "rustc", "cc", "gcc", "c++", "ld", "make" }) do
      local found, where = helpers.sh(node_env .. "sh -c 'command -v " .. tool .. "'")
      assert.is_false(found, tool .. " is on the node's PATH: " .. where)
    end
    -- and the install command found what it needs there
    assert.matches("kong%-plugin%-confluent%-consume 0%.1%.0%-1 is now installed in " .. tree:gsub("%p", "%%%0"),
                   install_output)
  end)

  it("installs every module of every plugin the checkout has, and the native module as built", function()
    local plugins_dir = helpers.ROOT .. "/kong-plugin/kong/plugins"
    local installed = set_of(files_under(tree .. "/share/lua/5.1/kong/plugins"))
    local sources = files_under(plugins_dir)
    assert.is_true(#sources >= 8)
    for _, path in ipairs(sources) do
      assert.is_true(installed[path], path .. " is missing from the rock: add it to the rockspec")
      sh_ok("cmp " .. plugins_dir .. "/" .. path .. " " .. tree .. "/share/lua/5.1/kong/plugins/" .. path)
    end
    assert.equal(#sources, #files_under(tree .. "/share/lua/5.1/kong/plugins"))
    sh_ok("cmp " .. helpers.ROOT .. "/target/lua/confluent_consume_native.so " ..
          tree .. "/lib/lua/5.1/confluent_consume_native.so")
  end)

  it("the native module needs exactly the libraries the README lists, and glibc no newer than it says", function()
    local so = tree .. "/lib/lua/5.1/confluent_consume_native.so"
    local needed = {}
    for lib in sh_ok("readelf -d " .. so):gmatch("%(NEEDED%)%s+Shared library: %[([^%]]+)%]") do
      needed[#needed + 1] = lib
    end
    local listed = {}
    for row in install_section:gmatch("\n(| `[^\n]+)") do
      for lib in row:match("^| ([^|]+)|"):gmatch("`([^`]+)`") do
        listed[#listed + 1] = lib
      end
    end
    table.sort(needed)
    table.sort(listed)
    assert.same(listed, needed)

    local floor = { 0, 0 }
    for major, minor in sh_ok("objdump -T " .. so):gmatch("GLIBC_(%d+)%.(%d+)") do
      major, minor = tonumber(major), tonumber(minor)
      if major > floor[1] or (major == floor[1] and minor > floor[2]) then
        floor = { major, minor }
      end
    end
    local stated = assert(install_section:match("`GLIBC_(%d+%.%d+)`"), "README states the glibc floor")
    assert.equal(stated, floor[1] .. "." .. floor[2])
  end)

  it("the host loads the plugin from the installed tree, configured as the README says", function()
    -- kong.conf's nginx_http_* / nginx_proxy_* lines are the directives the host puts into nginx.conf
    local conf = assert(io.open(host.prefix .. "/nginx.conf")):read("*a")
    local seen = 0
    for key, value in install_section:gmatch("\nnginx_[a-z]+_([%w_]+) = ([^\n]+)") do
      assert.matches("\n%s*" .. key .. " " .. value:gsub("%p", "%%%0") .. ";", conf)
      seen = seen + 1
    end
    assert.equal(2, seen)
    assert.matches("\nplugins = bundled,confluent%-consume,kafka%-consume\n", install_section)
    local status, info = host:admin("GET", "/")
    assert.equal(200, status)
    assert.equal(754, info.plugins.available_on_server["confluent-consume"].priority)
    assert.equal(753, info.plugins.available_on_server["kafka-consume"].priority)
  end)

  it("serves the README quick start verbatim", function()
    local quick = commands(readme_section("Quick start"), "curl ")
    assert.equal(4, #quick)
    local function run(i)
      return sh_ok(quick[i] .. " 2>/dev/null") -- curl's progress meter goes to stderr
    end
    assert.equal("confluent-consumer", cjson.decode(run(1)).name)
    local plugin = cjson.decode(run(2))
    assert.equal("confluent-consume", plugin.name)
    assert.equal("my-topic", plugin.config.topics[1].name)
    -- the topic is still empty (auto_offset_reset is earliest, Kong's default): later records are served
    assert.same({}, cjson.decode(run(3))["my-topic"].partitions["0"].records)
    sh_ok(helpers.KAFKA_TOOL .. " produce --brokers 127.0.0.1:9092 --topic my-topic --count 6 --partitions 3")
    local seen = 0
    for _ = 1, 20 do
      -- the long-poll form: answers as soon as records are there
      seen = seen + #helpers.records_of(cjson.decode(run(4)))
      if seen >= 6 then break end
    end
    assert.equal(6, seen)
    -- the native module the workers mapped is the tree's
    local maps = sh_ok("cat /proc/" .. host:worker_pids()[1] .. "/maps /proc/" .. host:worker_pids()[2] .. "/maps")
    assert.matches(tree:gsub("%p", "%%%0") .. "/lib/lua/5%.1/confluent_consume_native%.so", maps)
    assert.is_nil(maps:find(helpers.ROOT .. "/target/", 1, true))
  end)

  it("streams records as server-sent events", function()
    local status = host:admin("POST", "/routes", "name=confluent-stream&paths[]=/stream")
    assert.equal(201, status)
    status = host:admin("POST", "/routes/confluent-stream/plugins",
                        "name=confluent-consume&config.mode=server-sent-events" ..
                        "&config.bootstrap_servers[1].host=127.0.0.1&config.bootstrap_servers[1].port=9092" ..
                        "&config.topics[1].name=my-topic&config.auto_offset_reset=earliest")
    assert.equal(201, status)
    local conn = host:connect(30)
    local code = conn:send_request("GET", "/stream", { Accept = "text/event-stream" })
    assert.equal(200, code)
    sh_ok(helpers.KAFKA_TOOL .. " produce --brokers 127.0.0.1:9092 --topic my-topic --count 5 --partitions 3")
    -- from the earliest record: the quick start's 6 and these 5
    local events, why = conn:read_events(11, 20)
    conn:close()
    assert.equal("count", why)
    local records = 0
    for _, e in ipairs(events) do
      if (e.event or "message") == "message" and e.data then
        assert.is_table(cjson.decode(e.data))
        records = records + 1
      end
    end
    assert.equal(11, records)
  end)

  it("rejects an invalid config the way Kong does", function()
    local output = sh_ok("curl -s -X POST http://localhost:8001/routes/confluent-consumer/plugins " ..
                         "--data name=confluent-consume --data config.bootstrap_servers[1].host=127.0.0.1 " ..
                         "--data config.bootstrap_servers[1].port=9092")
    local err = cjson.decode(output)
    assert.equal("schema violation (config.topics: required field missing)", err.message)
    assert.equal("schema violation", err.name)
  end)
end)
