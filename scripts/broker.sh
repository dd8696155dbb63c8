#!/usr/bin/env bash
# Manage a local tansu (Kafka-compatible) broker for tests, the demo and benchmarks.
#
#   scripts/broker.sh install
#       Ensure tansu 0.6.0 is built into the cache (${CC_CACHE:-~/.cache/confluent-consume}); print its path.
#   scripts/broker.sh start --dir DIR [--port 9092] [--storage memory|sqlite] [-- EXTRA_TANSU_ARGS...]
#       Start tansu in the background on 127.0.0.1:PORT; log DIR/broker.log, pid DIR/broker.pid.
#       sqlite storage lives in DIR/tansu.db (survives restarts). Waits until the broker serves Kafka.
#   scripts/broker.sh stop --dir DIR [--signal KILL]
#       Stop the broker whose pid is in DIR/broker.pid (TERM, up to 10 s, then KILL).
#   scripts/broker.sh topic [--port 9092] NAME PARTITIONS
#       Create a topic (no error if it already exists).
#   scripts/broker.sh user [--port 9092] NAME PASSWORD [scram256|scram512]
#       Create a SCRAM user (the broker must run without --authentication; use sqlite storage to keep it).
#
# Environment: CC_CACHE (cache root), TANSU (path to a tansu binary, overrides the cache),
#              KAFKA_TOOL (path to kafka-tool, used for the readiness check if present).
set -euo pipefail

TANSU_VERSION=0.6.0
CACHE_ROOT="${CC_CACHE:-$HOME/.cache/confluent-consume}"
TANSU_ROOT="$CACHE_ROOT/tansu-$TANSU_VERSION"
TANSU="${TANSU:-$TANSU_ROOT/bin/tansu}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "broker.sh: $*" >&2; exit 1; }

cmd_install() {
    if [[ ! -x "$TANSU" ]]; then
        command -v cargo >/dev/null || die "cargo not found; cannot build tansu"
        echo "broker.sh: building tansu $TANSU_VERSION into $TANSU_ROOT (about 9 minutes)..." >&2
        cargo install --root "$TANSU_ROOT" "tansu@$TANSU_VERSION" --locked \
            --no-default-features --features dynostore,libsql >&2
        [[ -x "$TANSU" ]] || die "build finished but $TANSU is missing"
    fi
    echo "$TANSU"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# Readiness: a metadata request through librdkafka (kafka-tool) if available, else the tansu CLI.
# With --authentication neither can authenticate (an unauthenticated request just hangs), so an open TCP
# port has to do.
broker_ready() {
    local port="$1" auth="$2" tool="${KAFKA_TOOL:-$REPO_ROOT/target/release/kafka-tool}"
    if [[ "$auth" == 1 ]]; then
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
    elif [[ -x "$tool" ]]; then
        "$tool" wait-ready --brokers "127.0.0.1:$port" --timeout-ms 1000 >/dev/null 2>&1
    else
        # Any answer from the broker (even an error about a missing topic) proves it serves Kafka.
        timeout 3 "$TANSU" topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1 ||
            timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
    fi
}

cmd_start() {
    local dir="" port=9092 storage=memory extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir="$2"; shift 2 ;;
            --port) port="$2"; shift 2 ;;
            --storage) storage="$2"; shift 2 ;;
            --) shift; extra=("$@"); break ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "start: --dir DIR is required"
    [[ -x "$TANSU" ]] || die "tansu not found at $TANSU (run: scripts/broker.sh install)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/broker.pid" ]] && pid_alive "$(cat "$dir/broker.pid")"; then
        die "a broker is already running from $dir (pid $(cat "$dir/broker.pid"))"
    fi
    local engine
    case "$storage" in
        memory) engine="memory://tansu/" ;;
        # tansu resolves sqlite://HOST/PATH against its working directory (even "sqlite:///abs" is
        # relative), so it runs from DIR and the file is DIR/tansu.db.
        sqlite) engine="sqlite://tansu.db" ;;
        *) die "start: --storage must be memory or sqlite" ;;
    esac
    local url="tcp://127.0.0.1:$port" auth=0 arg
    for arg in "${extra[@]+"${extra[@]}"}"; do [[ "$arg" == --authentication ]] && auth=1; done
    # tansu's only listener defaults to 0.0.0.0:9092: pin it (and the advertised address) to loopback.
    (cd "$dir" && exec "$TANSU" broker \
        --listener-url "$url" \
        --advertised-listener-url "$url" \
        --storage-engine "$engine" \
        "${extra[@]+"${extra[@]}"}") >"$dir/broker.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/broker.pid"
    local deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
        pid_alive "$pid" || { tail -n 30 "$dir/broker.log" >&2; rm -f "$dir/broker.pid"; die "tansu exited during start-up"; }
        if broker_ready "$port" "$auth"; then
            echo "broker.sh: tansu pid $pid serving on 127.0.0.1:$port ($engine)" >&2
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$dir/broker.log" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/broker.pid"
    die "tansu did not become ready on 127.0.0.1:$port within 20 s"
}

cmd_stop() {
    local dir="" sig=TERM
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir="$2"; shift 2 ;;
            --signal) sig="$2"; shift 2 ;;
            *) die "stop: unknown argument $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "stop: --dir DIR is required"
    local pidfile="$dir/broker.pid"
    [[ -f "$pidfile" ]] || { echo "broker.sh: no $pidfile, nothing to stop" >&2; return 0; }
    local pid
    pid="$(cat "$pidfile")"
    if pid_alive "$pid"; then
        kill -"$sig" "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
    echo "broker.sh: stopped tansu pid $pid" >&2
}

cmd_topic() {
    local port=9092
    [[ "${1:-}" == "--port" ]] && { port="$2"; shift 2; }
    [[ $# -eq 2 ]] || die "usage: topic [--port P] NAME PARTITIONS"
    local out
    if out="$("$TANSU" topic create "$1" --broker "tcp://127.0.0.1:$port" --partitions "$2" 2>&1)"; then
        return 0
    fi
    if grep -qi "exist" <<<"$out"; then
        echo "broker.sh: topic $1 already exists" >&2
        return 0
    fi
    echo "$out" >&2
    die "could not create topic $1"
}

cmd_user() {
    local port=9092
    [[ "${1:-}" == "--port" ]] && { port="$2"; shift 2; }
    [[ $# -ge 2 ]] || die "usage: user [--port P] NAME PASSWORD [scram256|scram512]"
    "$TANSU" user create "$1" "$2" --broker "tcp://127.0.0.1:$port" --mechanism "${3:-scram256}"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    topic) shift; cmd_topic "$@" ;;
    user) shift; cmd_user "$@" ;;
    *) sed -n '2,18p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
