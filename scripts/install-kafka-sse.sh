#!/usr/bin/env bash
# Installs the bench's KafkaSSE peer (bench/kafka-sse: npm `kafka-sse`, pinned by its package-lock.json)
# into .cache/kafka-sse, once: node-rdkafka compiles its own librdkafka with node-gyp (several minutes on
# 2 cores), against Debian's node headers (/usr/include/node, nodedir=/usr) so that nothing but the npm
# registry is reached. Only `make bench` needs it (scenario 14), and it installs it lazily.
#
#   scripts/install-kafka-sse.sh   prints the directory to run bench/kafka-sse/server.js with (NODE_PATH)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/.cache/kafka-sse"
lock="$root/bench/kafka-sse/package-lock.json"
if [ -f "$cache/node_modules/node-rdkafka/build/Release/node-librdkafka.node" ] &&
   cmp -s "$lock" "$cache/package-lock.json"; then
  echo "$cache/node_modules"
  exit 0
fi
command -v npm >/dev/null || { echo "install-kafka-sse.sh: npm is missing (apt-get install npm)" >&2; exit 1; }
[ -f /usr/include/node/node.h ] || { echo "install-kafka-sse.sh: node headers are missing (apt-get install nodejs)" >&2; exit 1; }
mkdir -p "$cache"
cp "$root/bench/kafka-sse/package.json" "$lock" "$cache/"
( cd "$cache" && npm_config_nodedir=/usr npm ci --no-audit --no-fund >&2 )
echo "$cache/node_modules"
