#!/usr/bin/env python3
"""`make bench`: figures for the plugin, each beside a reference measured in the same run.

Starts its own broker (tansu, memory storage) and host (one nginx worker) on loopback ports of its own,
runs the scenarios, prints a Markdown table and writes it to bench/results/latest.md. The reference is
`kafka-tool` (a raw librdkafka consumer with assign() and the same fetch wait) on the same topic.
"""
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, ".run", "bench")
BROKER_PORT, PROXY_PORT, ADMIN_PORT = 19392, 18900, 18901
TOOL = os.path.join(ROOT, "target", "release", "kafka-tool")
FETCH_WAIT_MS = 10


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def tool(*args):
    return json.loads(sh(TOOL, args[0], "--brokers", f"127.0.0.1:{BROKER_PORT}", *args[1:]).strip().splitlines()[-1])


def topic(name, partitions):
    sh(os.path.join(ROOT, "scripts", "broker.sh"), "topic", "--port", str(BROKER_PORT), name, str(partitions))
    return name


def route(name, topic_name, mode, **extra):
    config = {"bootstrap_servers": [{"host": "127.0.0.1", "port": BROKER_PORT}], "topics": [{"name": topic_name}],
              "mode": mode, "auto_offset_reset": "earliest", "fetch_wait_max_ms": FETCH_WAIT_MS}
    config.update(extra)
    return {"name": name, "hosts": [name + ".bench"], "plugins": [{"name": "confluent-consume", "config": config}]}


def worker_pid():
    master = open(os.path.join(RUN, "host", "logs", "nginx.pid")).read().strip()
    return int(sh("pgrep", "-P", master).split()[0])


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def get_throughput(host, total):
    """One keep-alive client, large max_records, until `total` records; counts records without parsing."""
    conn = socket.create_connection(("127.0.0.1", PROXY_PORT))
    request = f"GET /?max_records=20000&max_bytes=67108864&wait=1000 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    f = conn.makefile("rb")
    got, t0 = 0, time.perf_counter()
    while got < total:
        conn.sendall(request)
        length, chunked = None, False
        f.readline()
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
            if k.lower() == "transfer-encoding" and "chunked" in v:
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int(f.readline().strip(), 16)
                if size == 0:
                    f.readline()
                    break
                parts.append(f.read(size))
                f.readline()
            body = b"".join(parts)
        else:
            body = f.read(length)
        got += body.count(b'"offset":')
    conn.close()
    return got / (time.perf_counter() - t0)


async def sse_reader(host, path, want, on_event):
    reader, writer = await asyncio.open_connection("127.0.0.1", PROXY_PORT, limit=1 << 24)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    buf, got = b"", 0
    while got < want:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            break
        buf += (await reader.readexactly(size + 2))[:-2]
        *blocks, buf = buf.split(b"\n\n")
        for block in blocks:
            if b"\ndata: " in block:
                got += 1
                on_event(block)
    writer.close()
    return got


def sse_throughput(host, total):
    t0 = time.perf_counter()
    got = asyncio.run(sse_reader(host, "/?from=earliest", total, lambda b: None))
    return got / (time.perf_counter() - t0)


def sse_latency(host, topic_name, count=200):
    lat = []

    def on_event(block):
        data = block.split(b"\ndata: ", 1)[1]
        ts = int(re.search(rb'ts_us\\?":(\d+)', data).group(1))
        lat.append(time.time() * 1000 - ts / 1000)

    async def run():
        task = asyncio.create_task(sse_reader(host, "/?from=latest", count, on_event))
        raw = await asyncio.create_subprocess_exec(TOOL, "latency", "--brokers", f"127.0.0.1:{BROKER_PORT}",
                                                   "--topic", topic_name, "--count", str(count),
                                                   "--fetch-wait-ms", str(FETCH_WAIT_MS),
                                                   stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(1.0)
        prod = await asyncio.create_subprocess_exec(TOOL, "produce", "--brokers", f"127.0.0.1:{BROKER_PORT}",
                                                    "--topic", topic_name, "--count", str(count),
                                                    "--interval-ms", "20", stdout=asyncio.subprocess.DEVNULL)
        await prod.wait()
        out, _ = await raw.communicate()
        await task
        return json.loads(out.decode().strip().splitlines()[-1])

    raw = asyncio.run(run())
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"p50": p(0.5), "p99": p(0.99), "max": lat[-1]}, raw


async def idle_streams(host, n):
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", PROXY_PORT)
        w.write(f"GET /?from=latest HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        conns.append((r, w))
    for r, _ in conns:
        await r.readuntil(b"\r\n\r\n")
    return conns


def main():
    subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop", "--dir", os.path.join(RUN, "broker")],
                   capture_output=True)
    subprocess.run(["rm", "-rf", RUN], check=True)
    os.makedirs(RUN)
    sh(os.path.join(ROOT, "scripts", "broker.sh"), "start", "--dir", os.path.join(RUN, "broker"),
       "--port", str(BROKER_PORT), "--storage", "memory")
    try:
        t1 = topic("bench-p1", 1)
        t3 = topic("bench-p3", 3)
        tl = topic("bench-latency", 1)
        tool("produce", "--topic", t1, "--count", "100000", "--size", "200")
        tool("produce", "--topic", t3, "--count", "100000", "--size", "200", "--partitions", "3")
        routes = [route("get1", t1, "http-get", max_records=20000, max_bytes=67108864),
                  route("get3", t3, "http-get", max_records=20000, max_bytes=67108864),
                  route("sse1", t1, "server-sent-events"),
                  route("lat", tl, "server-sent-events")]
        with open(os.path.join(RUN, "kong.json"), "w") as f:
            json.dump({"_format_version": "3.0", "routes": routes}, f)
        sh(os.path.join(ROOT, "host", "bin", "kong-host"), "start", "--prefix", os.path.join(RUN, "host"),
           "--config", os.path.join(RUN, "kong.json"), "--workers", "1",
           "--proxy-listen", f"127.0.0.1:{PROXY_PORT}", "--admin-listen", f"127.0.0.1:{ADMIN_PORT}")
        pid = worker_pid()
        rows = []
        raw1 = tool("consume", "--topic", t1, "--count", "100000", "--from", "earliest",
                    "--fetch-wait-ms", str(FETCH_WAIT_MS))["records_per_s"]
        get1 = get_throughput("get1.bench", 100000)
        rows.append(("http-get, 100k x 200 B, 1 partition, one client", f"{get1:,.0f} rec/s",
                     f"{raw1:,.0f} rec/s", f"{get1 / raw1:.2f}"))
        raw3 = tool("consume", "--topic", t3, "--count", "100000", "--from", "earliest",
                    "--fetch-wait-ms", str(FETCH_WAIT_MS))["records_per_s"]
        get3 = get_throughput("get3.bench", 100000)
        rows.append(("http-get, 100k x 200 B, 3 partitions, one client", f"{get3:,.0f} rec/s",
                     f"{raw3:,.0f} rec/s", f"{get3 / raw3:.2f}"))
        sse = sse_throughput("sse1.bench", 100000)
        rows.append(("SSE, 100k x 200 B from earliest, one client", f"{sse:,.0f} rec/s", f"{raw1:,.0f} rec/s",
                     f"{sse / raw1:.2f}"))
        lat, raw_lat = sse_latency("lat.bench", tl)
        rows.append(("SSE live latency p50, 200 records 20 ms apart", f"{lat['p50']:.2f} ms",
                     f"{raw_lat['p50_ms']:.2f} ms", f"+{lat['p50'] - raw_lat['p50_ms']:.2f} ms"))
        rows.append(("SSE live latency p99", f"{lat['p99']:.2f} ms", f"{raw_lat['p99_ms']:.2f} ms",
                     f"+{lat['p99'] - raw_lat['p99_ms']:.2f} ms"))
        before_rss, before_threads = rss_mb(pid), threads(pid)

        async def idle():
            conns = await idle_streams("lat.bench", 1000)
            await asyncio.sleep(1)
            during = rss_mb(pid), threads(pid)
            for _, w in conns:
                w.close()
            return during
        during_rss, during_threads = asyncio.run(idle())
        rows.append(("worker RSS, 1,000 idle SSE streams on one worker", f"{during_rss:.1f} MB",
                     f"{before_rss:.1f} MB before", f"+{during_rss - before_rss:.1f} MB"))
        rows.append(("worker threads, 1,000 idle SSE streams", str(during_threads), f"{before_threads} before",
                     f"+{during_threads - before_threads}"))
        table = ["| scenario | plugin | reference (same run) | ratio / delta |", "|---|---|---|---|"]
        table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        text = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, fetch.wait.max.ms = {FETCH_WAIT_MS}, "
                f"tansu memory storage, one nginx worker, loopback, {os.cpu_count()} cores.\n\n" + "\n".join(table) + "\n")
        print(text)
        with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
            f.write(text)
    finally:
        subprocess.run([os.path.join(ROOT, "host", "bin", "kong-host"), "stop", "--prefix",
                        os.path.join(RUN, "host")], capture_output=True)
        subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop", "--dir", os.path.join(RUN, "broker")],
                       capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
