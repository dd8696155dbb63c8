-- Schema of the host-echo test plugin (kong-host's own tests).
local typedefs = require "kong.db.schema.typedefs"


return {
  name = "host-echo",
  fields = {
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { message = { type = "string", required = true } },
          { status = { type = "integer", default = 200, between = { 100, 599 } } },
          { fail = { type = "boolean", default = false } },
          { mode = { type = "string", default = "plain",
                     one_of = { "plain", "fancy" } } },
          { servers = { type = "array",
                        elements = { type = "record", fields = {
                          { host = typedefs.host { required = true } },
                          { port = typedefs.port { required = true } },
                        } } } },
          { secret = { type = "string", referenceable = true, encrypted = true } },
          { timeout = typedefs.timeout { default = 1000 } },
        },
    } },
  },
}
