# kong-plugin-confluent-consume — see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NATIVE_SO := target/release/libconfluent_consume_native.so
LUA_SO := target/lua/confluent_consume_native.so
FAULT_DIR := target/fault-injection

.PHONY: help deps build rock fault-injection broker run test test-rust test-unit test-integration test-faults fuzz fuzz-smoke \
	fuzz-cmin bench clean

help:
	@echo "make run    install what is missing, build, start broker + host + demo producer"
	@echo "make test   install what is missing, build, run every test"
	@echo "make rock   binary rock (no Rust needed to install it) and source rock, in target/rocks/"
	@echo "make bench  throughput, latency and memory figures beside a raw librdkafka consumer"

deps:
	@scripts/install-deps.sh

# cargo names the library lib<name>.so; Lua wants <name>.so. `install` gives it a new inode, so a
# running nginx keeps its mapped copy intact.
build: deps
	cargo build --release --locked --workspace
	@mkdir -p target/lua
	install -m 0755 $(NATIVE_SO) $(LUA_SO)

# target/rocks/: the binary rock (Lua modules + the native module built here; `luarocks install` of it
# needs no Rust toolchain) and the source rock. See scripts/rock.sh and README "Install in Kong".
rock: build
	@scripts/rock.sh

# The native module with the `fault-injection` feature (an export that panics on purpose), for
# spec/27-panic_spec.lua only. Its own target dir keeps it from ever replacing the production build. A
# first build starts from a copy of the production build's: the dependencies are the same and take most of
# a fresh build's time (about ten minutes on 2 cores), and only this crate's features differ.
fault-injection: deps
	@if [ ! -d $(FAULT_DIR)/release ] && [ -d target/release/deps ]; then \
	  mkdir -p $(FAULT_DIR) && cp -a target/release $(FAULT_DIR)/release; fi
	cargo build --release --locked --features fault-injection --target-dir $(FAULT_DIR) -p confluent-consume-native
	@mkdir -p $(FAULT_DIR)/lua
	install -m 0755 $(FAULT_DIR)/release/libconfluent_consume_native.so $(FAULT_DIR)/lua/confluent_consume_native.so

broker: deps
	@scripts/broker.sh install >/dev/null

run: build broker
	@scripts/run-demo.sh

test: build fault-injection broker
	@scripts/run-tests.sh

test-rust: build
	cargo test --release --locked --workspace

test-unit: build
	@scripts/run-specs.sh spec/0*_spec.lua

test-integration: build broker
	@scripts/run-tests.sh integration

# Faults (broker and worker kills, reloads), leaks over many connections, bounds and hostile input.
# `make test` runs these too.
test-faults: build fault-injection broker
	@scripts/run-tests.sh faults

# libFuzzer targets in fuzz/ (cargo fuzz): record encoding, cursors, query arguments, settings, websocket
# client frames, Schema Registry records. `make test` runs the smoke (each target ~25 s); `make fuzz` runs
# each FUZZ_SECONDS (600) and reports executions.
fuzz-smoke: deps
	@scripts/fuzz.sh smoke

fuzz: deps
	@scripts/fuzz.sh long $(or $(FUZZ_SECONDS),600)

# Folds what fuzzing found into the committed, minimized corpus fuzz/corpus/<target>/.
fuzz-cmin: deps
	@scripts/fuzz.sh cmin

# Figures, each beside a raw librdkafka consumer measured in the same run (not part of `make test`).
bench: build broker
	@python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q -r bench/requirements.txt
	python3 bench/bench.py

clean:
	cargo clean
	rm -rf fuzz/target fuzz/work
	rm -rf .run
