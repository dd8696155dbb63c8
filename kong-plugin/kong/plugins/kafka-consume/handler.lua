-- kafka-consume: Kong's second consume plugin, served by confluent-consume's modules (see variants.lua).
return require("kong.plugins.confluent-consume.variants").handler("kafka-consume")
