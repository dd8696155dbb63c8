-- TLS for the integration specs: a throw-away PKI made with openssl, a socat TLS terminator in front of a
-- plaintext broker (tansu 0.6.0 cannot serve TLS itself), and a tansu broker that advertises the
-- terminator's port (a Kafka client connects to the advertised address after bootstrapping, so a broker
-- behind a terminator must advertise the terminator, not its own plaintext port).
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local socket = require "socket"


local _M = {}


local run = helpers.sh_ok
local spawn, kill = proc.spawn, proc.kill


local function read(path)
  local file = assert(io.open(path, "r"))
  local text = file:read("*a")
  file:close()
  return text
end


local function write(path, text)
  local file = assert(io.open(path, "w"))
  file:write(text)
  file:close()
end


-- A CA, a server certificate for localhost/127.0.0.1 and a client certificate signed by it, and a second,
-- unrelated CA. Returns the paths and the PEM texts.
function _M.make_pki(dir)
  run("rm -rf " .. dir .. " && mkdir -p " .. dir)
  local key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local function ca(name, cn)
    run(string.format("cd %s && openssl req -x509 %s -keyout %s.key -out %s.pem -days 2 -subj '/CN=%s' " ..
                      "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
                      dir, key, name, name, cn))
  end
  local function signed(name, cn, extensions)
    write(dir .. "/" .. name .. ".ext", extensions)
    run(string.format("cd %s && openssl req %s -keyout %s.key -out %s.csr -subj '/CN=%s' && " ..
                      "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 " ..
                      "-out %s.pem -extfile %s.ext", dir, key, name, name, cn, name, name, name))
  end
  ca("ca", "confluent-consume test CA")
  ca("other-ca", "unrelated test CA")
  signed("server", "localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
  signed("client", "kong-client", "extendedKeyUsage=clientAuth\n")
  write(dir .. "/combined.pem", read(dir .. "/server.pem") .. read(dir .. "/server.key"))

  local pki = { dir = dir }
  for _, name in ipairs({ "ca", "other-ca", "server", "client" }) do
    local field = name:gsub("-", "_")
    pki[field] = dir .. "/" .. name .. ".pem"
    pki[field .. "_pem"] = read(pki[field])
  end
  pki.ca_key, pki.server_key, pki.client_key = dir .. "/ca.key", dir .. "/server.key", dir .. "/client.key"
  pki.client_key_pem = read(pki.client_key)
  pki.combined = dir .. "/combined.pem"
  return pki
end


-- Waits until 127.0.0.1:port accepts a TCP connection.
function _M.wait_port(port, seconds)
  local deadline = socket.gettime() + (seconds or 10)
  repeat
    local sock = socket.tcp()
    sock:settimeout(0.5)
    local ok = sock:connect("127.0.0.1", port)
    sock:close()
    if ok then
      return true
    end
    socket.sleep(0.05)  -- the poll interval of this wait-with-deadline
  until socket.gettime() > deadline
  error("nothing accepts connections on 127.0.0.1:" .. port)
end


-- socat terminating TLS on 127.0.0.1:listen_port (with pki `dir`'s server certificate) and forwarding the
-- plaintext to 127.0.0.1:target_port. opts.verify_client: require a client certificate signed by the CA.
function _M.start_terminator(listen_port, target_port, dir, opts)
  opts = opts or {}
  local verify = opts.verify_client and ("verify=1,cafile=" .. dir .. "/ca.pem") or "verify=0"
  local log = string.format("%s/socat-%d.log", dir, listen_port)
  local pid = spawn(string.format("exec socat openssl-listen:%d,bind=127.0.0.1,fork,reuseaddr," ..
                                  "cert=%s/combined.pem,%s tcp:127.0.0.1:%d",
                                  listen_port, dir, verify, target_port), log)
  _M.wait_port(listen_port)
  return { pid = pid, port = listen_port, log = log, stop = function() kill(pid) end }
end


-- tansu on 127.0.0.1:port advertising 127.0.0.1:advertised_port, sqlite storage in dir/tansu.db (copy a
-- prepared tansu.db there first to start with its users and topics). opts.authentication: require SASL.
-- Writes dir/broker.pid, so `scripts/broker.sh stop --dir dir` works too.
function _M.start_broker(dir, port, advertised_port, opts)
  local tansu = run(helpers.ROOT .. "/scripts/broker.sh install"):match("([^\n]+)%s*$")
  run("mkdir -p " .. dir)
  local pid = spawn(string.format("cd %s && exec %s broker --listener-url tcp://127.0.0.1:%d " ..
                                  "--advertised-listener-url tcp://127.0.0.1:%d --storage-engine sqlite://tansu.db%s",
                                  dir, tansu, port, advertised_port,
                                  (opts or {}).authentication and " --authentication" or ""), dir .. "/broker.log")
  write(dir .. "/broker.pid", pid .. "\n")
  _M.wait_port(port, 20)
  return { pid = pid, port = port, stop = function() kill(pid) end }
end


return _M
