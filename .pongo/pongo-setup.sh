#!/usr/bin/env bash
# Sourced by Pongo inside the Kong test container before the specs run (Kong/kong-pongo README, "Test
# initialization"). Builds and installs the plugin with its native module (`luarocks make`), builds what
# the specs use beside it (kafka-tool, the fault-injection build, tansu), starts the two shared brokers,
# and points spec/helpers/host.lua at Kong (CC_GATEWAY=kong, see spec/helpers/kong.lua).
#
#   pongo run -- spec/04-host_kong_spec.lua spec/1[0-3578]*_spec.lua spec/2*_spec.lua spec/3*_spec.lua
#
# spec/14 (install), spec/16 (the demo page, which only the development host serves) and spec/19 (the
# development host run by another user) are about the development host and do not run under Kong.
#
# No Kafka service in docker-compose: the fault specs kill and restart brokers of their own, so every
# broker is a tansu process in this container, started by scripts/broker.sh as on the project's machines.
#
# The build happens in a copy (.pongo/build) so that the container's artifacts (another glibc, another
# toolchain) never mix with the checkout's target/. The first run builds tansu and librdkafka (15 minutes
# or more); .pongo/cache and .pongo/build keep them for the next runs.

cc_pongo_setup() {
  local root=/kong-plugin
  export CC_ROOT="$root"
  export CC_GATEWAY=kong
  export CC_CACHE="$root/.pongo/cache"
  export CC_BUILD_DIR="$root/.pongo/build"
  export CARGO_HOME="$CC_CACHE/cargo" RUSTUP_HOME="$CC_CACHE/rustup"
  export PATH="$CARGO_HOME/bin:$PATH"
  export KAFKA_TOOL="$CC_BUILD_DIR/target/release/kafka-tool"
  export CC_TEST_BROKER_PORT=19092 CC_TEST_MEMORY_BROKER_PORT=19093 CC_TEST_PORT_BASE=18200
  export CC_TEST_RUN_DIR="$root/.run/pongo"
  # busted loads the schemas of the test plugins too (Kong's get_db_utils)
  export LUA_PATH="$root/spec/fixtures/plugins/?.lua;$root/host/testdata/?.lua;$LUA_PATH"

  # a C toolchain and OpenSSL for librdkafka and the OAUTHBEARER token request, socat for spec/18's TLS
  # terminator, python3 for spec/15 and spec/33
  if ! command -v cc >/dev/null || ! command -v socat >/dev/null || ! command -v python3 >/dev/null ||
     ! dpkg -s libssl-dev >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q --no-install-recommends build-essential pkg-config \
      libssl-dev curl ca-certificates socat python3 || return 1
  fi
  if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
      sh -s -- -y --no-modify-path --profile minimal --default-toolchain 1.95.0 || return 1
  fi

  mkdir -p "$CC_BUILD_DIR"
  tar -C "$root" --exclude=./target --exclude=./.run --exclude=./.pongo --exclude=./fuzz/target \
    --exclude=./spec/browser/node_modules -cf - . | tar -C "$CC_BUILD_DIR" -xf - || return 1
  (
    cd "$CC_BUILD_DIR" &&
      # `deps` installs the development host's Debian packages: not wanted in Kong's image
      make -o deps build fault-injection &&
      luarocks make kong-plugin-confluent-consume-0.1.0-1.rockspec &&
      scripts/broker.sh install >/dev/null
  ) || return 1

  rm -rf "$CC_TEST_RUN_DIR" && mkdir -p "$CC_TEST_RUN_DIR"
  scripts/broker.sh start --dir "$CC_TEST_RUN_DIR/broker" --port "$CC_TEST_BROKER_PORT" --storage sqlite &&
    scripts/broker.sh start --dir "$CC_TEST_RUN_DIR/broker-memory" --port "$CC_TEST_MEMORY_BROKER_PORT" \
      --storage memory
}

cc_pongo_setup || echo "pongo-setup.sh: the set-up failed; the specs will fail" >&2
unset -f cc_pongo_setup
