-- confluent-consume's Status API routes: GET /confluent-consume/metrics (variants.lua).
return require("kong.plugins.confluent-consume.variants").status_api("confluent-consume")
