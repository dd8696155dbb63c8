-- kafka-consume's Status API routes: GET /kafka-consume/metrics (confluent-consume's variants.lua).
return require("kong.plugins.confluent-consume.variants").status_api("kafka-consume")
