-- JSON encoding for Admin API answers.
--
-- Debian's lua-cjson 2.1.0 has no `array_mt`, so an empty Lua table always
-- encodes as `{}`. Kong answers `[]` for empty arrays; values that must be
-- empty arrays are therefore replaced by a marker string before encoding
-- and the marker is swapped for `[]` afterwards.

local cjson = require "cjson.safe"


local _M = {
  null = cjson.null,
  decode = cjson.decode,
}


local EMPTY_ARRAY_MARKER = "\0kong_host:empty_array\0"
local ENCODED_MARKER = '"\\u0000kong_host:empty_array\\u0000"'


_M.EMPTY_ARRAY = EMPTY_ARRAY_MARKER


function _M.encode(value)
  local out, err = cjson.encode(value)
  if not out then
    return nil, err
  end
  if out:find(ENCODED_MARKER, 1, true) then
    out = out:gsub(ENCODED_MARKER:gsub("%p", "%%%0"), "[]")
  end
  return out
end


return _M
