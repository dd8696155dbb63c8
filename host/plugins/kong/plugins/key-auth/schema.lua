-- key-auth's configuration, as Kong 3.x's (kong/plugins/key-auth/schema.lua) without `key_in_body` and
-- `realm`, which the host's key-auth does not provide.
local typedefs = require "kong.db.schema.typedefs"


return {
  name = "key-auth",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { key_names = {
              description = "Header and query argument names a key is looked for under, in order.",
              type = "array",
              required = true,
              elements = typedefs.header_name,
              default = { "apikey" },
          } },
          { hide_credentials = {
              description = "Remove the key from the request once it was read.",
              type = "boolean",
              required = true,
              default = false,
          } },
          { anonymous = {
              description = "Id or username of the consumer a request without a valid key runs as; " ..
                            "unset: such a request gets a 401.",
              type = "string",
          } },
          { key_in_header = {
              description = "Look for the key in the request headers.",
              type = "boolean",
              required = true,
              default = true,
          } },
          { key_in_query = {
              description = "Look for the key in the query string.",
              type = "boolean",
              required = true,
              default = true,
          } },
          { run_on_preflight = {
              description = "Authenticate OPTIONS (CORS preflight) requests too.",
              type = "boolean",
              required = true,
              default = true,
          } },
        },
    } },
  },
}
