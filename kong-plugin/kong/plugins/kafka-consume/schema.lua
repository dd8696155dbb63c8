-- kafka-consume's configuration: confluent-consume's with Kong's kafka-consume differences (variants.lua).
return require("kong.plugins.confluent-consume.variants").kafka_consume_schema()
