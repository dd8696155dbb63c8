-- Whether the client of the current request has closed its connection: told by nginx (on_abort), or
-- asked of its socket (gone).
--
-- nginx learns that a client went away only from a read event, and only with lua_check_client_abort on.
-- It misses a client that closed right after sending its request (the end of stream arrived with the
-- request, before anyone watched for it), and every client when the directive is off (Kong's default).
-- A long-poll would then answer into the closed socket - the kernel accepts the write - and commit
-- records nobody received. Peeking at the socket before records are claimed closes that gap.
local ffi = require "ffi"
local base = require "resty.core.base"


local kong = kong
local ngx = ngx
local C = ffi.C
local cast = ffi.cast
local errno = ffi.errno
local get_request = base.get_request


-- The leading fields of ngx_http_request_t and ngx_connection_t, the same since nginx 0.x.
ffi.cdef [[
typedef struct { uint32_t signature; void *connection; } cc_ngx_request_head_t;
typedef struct { void *data; void *read; void *write; int fd; } cc_ngx_connection_head_t;
]]
-- another module may have declared it already
pcall(ffi.cdef, "long recv(int sockfd, void *buf, size_t len, int flags);")


local PEEK_NOWAIT = 0x2 + 0x40  -- MSG_PEEK | MSG_DONTWAIT (Linux)
local ECONNRESET = 104
local LINUX = ffi.os == "Linux"


local _M = {}


local byte = ffi.new("char[1]")
local warned = {}  -- the missing lua_check_client_abort is logged once per worker and message


-- Runs `handler` when the client goes away (ngx.on_abort). Without lua_check_client_abort that cannot
-- be, and the worker logs once what `unnoticed` says happens instead.
function _M.on_abort(handler, unnoticed)
  local ok, err = ngx.on_abort(handler)
  if not ok and not warned[unnoticed] then
    warned[unnoticed] = true
    kong.log.warn(unnoticed, ": set lua_check_client_abort on (", err, ")")
  end
end


-- True when the peer closed (or reset) the connection; false when it is open, has sent more (a
-- pipelined request), or cannot be asked (not Linux, no request, a connection without a socket).
function _M.gone()
  if not LINUX then
    return false
  end
  local r = get_request()
  if not r then
    return false
  end
  local c = cast("cc_ngx_request_head_t *", r).connection
  if c == nil then
    return false
  end
  local fd = cast("cc_ngx_connection_head_t *", c).fd
  if fd < 0 then
    return false
  end
  local n = C.recv(fd, byte, 1, PEEK_NOWAIT)
  return n == 0 or (n < 0 and errno() == ECONNRESET)
end


return _M
