-- Route matching, following Kong's HTTP router.
--
-- A route matches when every category it sets matches: hosts (exact,
-- `*.example.com` or `example.*`), paths (prefix, or regex when starting
-- with `~`, anchored at the start of the path) and methods. Among the
-- matching routes the most specific wins, in this order:
--   1. more categories set (hosts + paths + methods)
--   2. an exact host over a wildcard host
--   3. a regex path with higher `regex_priority`, regex paths over prefixes
--   4. the longest matching path
--   5. the route created first

local ngx = ngx
local type = type
local ipairs = ipairs
local setmetatable = setmetatable
local table_sort = table.sort
local re_find = ngx.re.find


local _M = {}
local mt = { __index = _M }


local function escape_pattern(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end


local function compile_host(host)
  if host:sub(1, 2) == "*." then
    return { wildcard = true,
             pattern = "^.+%." .. escape_pattern(host:sub(3)) .. "$" }
  end
  if host:sub(-2) == ".*" then
    return { wildcard = true,
             pattern = "^" .. escape_pattern(host:sub(1, -3)) .. "%..+$" }
  end
  return { exact = host }
end


local function compile(route, order)
  local c = {
    route = route,
    order = order,
    categories = 0,
    regex_priority = route.regex_priority or 0,
  }

  if type(route.hosts) == "table" and #route.hosts > 0 then
    c.categories = c.categories + 1
    c.hosts = {}
    c.plain_hosts_only = true
    for i, h in ipairs(route.hosts) do
      c.hosts[i] = compile_host(h:lower())
      if c.hosts[i].wildcard then
        c.plain_hosts_only = false
      end
    end
  end

  if type(route.paths) == "table" and #route.paths > 0 then
    c.categories = c.categories + 1
    c.paths = {}
    for i, p in ipairs(route.paths) do
      if p:sub(1, 1) == "~" then
        c.paths[i] = { regex = p:sub(2) }
      else
        c.paths[i] = { prefix = p }
      end
    end
  end

  if type(route.methods) == "table" and #route.methods > 0 then
    c.categories = c.categories + 1
    c.methods = {}
    for _, m in ipairs(route.methods) do
      c.methods[m:upper()] = true
    end
  end

  return c
end


function _M.new(routes)
  local compiled = {}
  for i, route in ipairs(routes or {}) do
    compiled[i] = compile(route, i)
  end
  return setmetatable({ routes = compiled }, mt)
end


local function match_host(c, host, host_no_port)
  if not c.hosts then
    return true, false
  end
  for _, h in ipairs(c.hosts) do
    if h.exact then
      if h.exact == host or h.exact == host_no_port then
        return true, false
      end
    elseif host_no_port:match(h.pattern) or host:match(h.pattern) then
      return true, true
    end
  end
  return false
end


-- Returns the matched path's length and whether it is a regex, or nil.
local function match_path(c, path)
  if not c.paths then
    return 0, false
  end

  local best_len, best_regex
  for _, p in ipairs(c.paths) do
    if p.prefix then
      if path:sub(1, #p.prefix) == p.prefix
         and (not best_len or (not best_regex and #p.prefix > best_len))
      then
        best_len, best_regex = #p.prefix, false
      end
    else
      local from, to = re_find(path, p.regex, "ajo")
      if from then
        local len = to - from + 1
        if not best_regex or len > best_len then
          best_len, best_regex = len, true
        end
      end
    end
  end

  return best_len, best_regex
end


local function more_specific(a, b)
  if a.categories ~= b.categories then
    return a.categories > b.categories
  end
  if a.exact_host ~= b.exact_host then
    return a.exact_host
  end
  if a.regex ~= b.regex then
    return a.regex
  end
  if a.regex and a.regex_priority ~= b.regex_priority then
    return a.regex_priority > b.regex_priority
  end
  if a.path_len ~= b.path_len then
    return a.path_len > b.path_len
  end
  return a.order < b.order
end


-- Returns the best route for a request, or nil.
function _M:match(method, host, path)
  host = (host or ""):lower()
  local host_no_port = host:gsub(":%d+$", "")

  local candidates = {}
  for _, c in ipairs(self.routes) do
    if not c.methods or c.methods[method] then
      local host_ok, wildcard = match_host(c, host, host_no_port)
      if host_ok then
        local path_len, regex = match_path(c, path)
        if path_len then
          candidates[#candidates + 1] = {
            route = c.route,
            categories = c.categories,
            exact_host = c.hosts ~= nil and not wildcard,
            regex = regex,
            regex_priority = c.regex_priority,
            path_len = path_len,
            order = c.order,
          }
        end
      end
    end
  end

  if #candidates == 0 then
    return nil
  end

  table_sort(candidates, more_specific)
  return candidates[1].route
end


return _M
