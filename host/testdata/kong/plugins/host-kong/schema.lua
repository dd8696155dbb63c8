-- Schema of the host-kong test plugin (kong-host's own tests).
local typedefs = require "kong.db.schema.typedefs"


return {
  name = "host-kong",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { action = { type = "string", required = true, one_of = {
              "exit", "yield", "sleep_exit", "stream", "fail", "exit_in_pcall", "on_abort",
          } } },
        },
    } },
  },
}
