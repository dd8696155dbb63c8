#!/usr/bin/env bash
# `make run`: a broker (memory storage, 127.0.0.1:9092), the development host with examples/kong.yml
# (proxy 127.0.0.1:8000, Admin API 127.0.0.1:8001, Status API 127.0.0.1:8007 as Kong's default
# status_listen), a producer writing one record a second to my-topic, and the project's Schema Registry
# (127.0.0.1:8081, Confluent's default port) with a producer writing one Avro record a second to
# orders-avro through Confluent's serializer (tools/schema-registry/).
# NODES=2 (up to 7: node 8's Admin API would take the registry's 8081) adds nodes sharing the broker, node
# n on proxy 127.0.0.1:80n0, Admin API 80n1 and Status API 80n7 (node 2: 8020, 8021, 8027), each its own
# nginx and shared dict: a small cluster.
# Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_DIR="$PWD/.run/demo"
BROKER_DIR="$RUN_DIR/broker"
HOST_PREFIX="$RUN_DIR/host"
NODES="${NODES:-1}"
[[ "$NODES" =~ ^[1-7]$ ]] || { echo "run-demo.sh: NODES must be 1 to 7, got '$NODES'" >&2; exit 2; }
producer_pid=""
registry_pid=""
avro_producer_pid=""

# The prefix of node n: the first node keeps the one-node paths.
node_prefix() { if [ "$1" = 1 ]; then echo "$HOST_PREFIX"; else echo "$HOST_PREFIX-$1"; fi; }

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  [ -n "$producer_pid" ] && kill "$producer_pid" 2>/dev/null || true
  [ -n "$avro_producer_pid" ] && kill "$avro_producer_pid" 2>/dev/null || true
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  for n in $(seq 1 "$NODES"); do
    host/bin/kong-host stop --prefix "$(node_prefix "$n")" >/dev/null 2>&1 || true
  done
  scripts/broker.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
}
trap stop_all INT TERM EXIT

mkdir -p "$RUN_DIR"
scripts/broker.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
for n in $(seq 1 "$NODES"); do
  host/bin/kong-host stop --prefix "$(node_prefix "$n")" >/dev/null 2>&1 || true
done
scripts/broker.sh start --dir "$BROKER_DIR" --port 9092 --storage memory
scripts/broker.sh topic --port 9092 my-topic 3
scripts/broker.sh topic --port 9092 orders-avro 1
# the registry's schemas live as long as the broker's records: both start empty
tools/schema-registry/run server --port 8081 >"$RUN_DIR/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8081/subjects >/dev/null && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$RUN_DIR/registry.log" >&2; exit 1; }
  sleep 0.1  # the poll interval of a 10 s wait for the registry to answer
done
host/bin/kong-host start --prefix "$HOST_PREFIX" --config examples/kong.yml --workers 2 \
  --proxy-listen 127.0.0.1:8000 --admin-listen 127.0.0.1:8001 --status-listen 127.0.0.1:8007 --static examples/web
for n in $(seq 2 "$NODES"); do
  host/bin/kong-host start --prefix "$(node_prefix "$n")" --config examples/kong.yml --workers 2 \
    --proxy-listen "127.0.0.1:80${n}0" --admin-listen "127.0.0.1:80${n}1" --status-listen "127.0.0.1:80${n}7" \
    --static examples/web
done
target/release/kafka-tool produce --brokers 127.0.0.1:9092 --topic my-topic --partitions 3 \
  --count 1 --interval-ms 1000 --forever --key-prefix demo- >"$RUN_DIR/producer.log" 2>&1 &
producer_pid=$!
# One order a second, serialized by Confluent's AvroSerializer (spec/fixtures/registry/order.avsc, which
# references demo.Money): the serializer registers the schemas, then writes magic byte, schema id, Avro.
avro_orders() {
  local i=0
  while true; do
    i=$((i + 1))
    printf '{"value": {"id": %d, "customer": "customer-%d", "note": null, "status": "PAID", "tag": {"$bytes": "AAEC"}, "amount": {"$decimal": "%d.50"}, "placed_at": %s, "price": {"currency": "EUR", "units": %d}}}\n' \
      "$i" "$((i % 7))" "$((i % 100))" "$(date +%s%3N)" "$((i % 100))"
    sleep 1
  done
}
avro_orders | tools/schema-registry/run produce --format avro --schema spec/fixtures/registry/order.avsc \
  --reference demo.Money=demo.Money=spec/fixtures/registry/money.avsc --registry http://127.0.0.1:8081 \
  --broker 127.0.0.1:9092 --topic orders-avro >"$RUN_DIR/avro-producer.log" 2>&1 &
avro_producer_pid=$!

cat <<'MSG'

Running: tansu on 127.0.0.1:9092, the plugin's host on 127.0.0.1:8000 (Admin API 127.0.0.1:8001,
Status API 127.0.0.1:8007), a producer writing one record a second to my-topic, and a Schema Registry on
127.0.0.1:8081 with a producer writing one Avro order a second to orders-avro. Try:

  curl -s http://localhost:8000/messages --header 'Host: demo.test'
  curl -s 'http://localhost:8000/messages?wait=5000&max_records=10' --header 'Host: demo.test'
  curl -s http://localhost:8000/messages --header 'Host: kafka.test'   (the kafka-consume plugin)
  curl -s http://localhost:8000/orders --header 'Host: demo.test'   (Avro records decoded to JSON)
  curl -s http://localhost:8081/subjects   (the registry's subjects; /schemas/ids/1 a schema)
  open http://localhost:8000/demo/index.html  (live stream in the browser)
  curl -s http://localhost:8007/confluent-consume/metrics   (Prometheus metrics: lag, served, errors)

or add a route of your own through the Admin API (the README's quick start):

  curl -X POST http://localhost:8001/routes --data "name=confluent-consumer" --data "hosts[]=confluent-consumer.test"
  curl -X POST http://localhost:8001/routes/confluent-consumer/plugins --data "name=confluent-consume" \
      --data "config.bootstrap_servers[1].host=127.0.0.1" --data "config.bootstrap_servers[1].port=9092" \
      --data "config.topics[1].name=my-topic"
  curl http://localhost:8000/messages --header 'Host: confluent-consumer.test'

Logs: .run/demo/host/logs/error.log, .run/demo/broker/broker.log, .run/demo/registry.log,
.run/demo/avro-producer.log. Ctrl-C stops everything.
MSG
if [ "$NODES" -gt 1 ]; then
  cat <<MSG

$NODES nodes share the broker: node n serves the same routes on proxy 127.0.0.1:80n0 (Admin API 80n1,
Status API 80n7; logs .run/demo/host-n/logs/). A cursor read continues on any node:

  curl -si 'http://localhost:8000/messages?from=earliest&max_records=5' --header 'Host: demo.test' | grep -i cursor
  curl -s 'http://localhost:8020/messages?max_records=5&cursor=<that cursor>' --header 'Host: demo.test'
MSG
fi
wait "$producer_pid"
