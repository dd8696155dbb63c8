-- confluent-consume: serves Kafka topics over HTTP. One module per mode serves the requests; the handler
-- is shared with kafka-consume (variants.lua).
return require("kong.plugins.confluent-consume.variants").handler("confluent-consume")
