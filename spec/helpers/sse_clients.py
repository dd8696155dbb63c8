#!/usr/bin/env python3
"""Many concurrent SSE clients for the specs (asyncio, stdlib only).

Opens --clients connections to 127.0.0.1:--port with Host --host, reads --events message events on each
(or until --timeout), and prints one JSON line: how many clients completed, how many distinct event
sequences they saw (1 means identical: per partition the same records in the same order, as Kafka orders
only within a partition), the ids of the first and last events, and any errors.
With --slow N, client 0 stops reading for N seconds after its first event (a slow client).
With --resume, a client reconnects with Last-Event-ID (the last id it saw) whenever its stream ends, fails or
is silent for --idle seconds (with --reconnect-on-error N, clients 0..N-1 also on an error event), until
--events, --timeout or --stop-file. --out DIR writes each client's message events to DIR/<index>.txt as
"partition offset seq" (seq from a kafka-tool JSON value), for the fault specs.
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import socket
import time


class Stop(Exception):
    """The stop file appeared."""


def stopping(args):
    return bool(args.stop_file) and os.path.exists(args.stop_file)


async def read(args, state, call):
    """Awaits call(); with --resume, gives up after --idle seconds without a byte (the stream is dead) and
    raises Stop when the stop file appears."""
    if not args.resume:
        return await call()
    while True:
        try:
            result = await asyncio.wait_for(call(), 0.25)
            state["active"] = time.time()
            return result
        except asyncio.TimeoutError:
            # StreamReader keeps a partial line or chunk buffered across a cancelled read
            if stopping(args):
                raise Stop()
            if time.time() - state["active"] > args.idle:
                raise TimeoutError(f"no data for {args.idle} s")


async def connection(index, args, state, started):
    """One stream: reads events until the limit, the end of the stream, or an error (raised)."""
    limit = args.events or float("inf")
    sock = socket.socket()
    if index == 0 and args.slow:
        # a small receive buffer, so that not reading soon holds up the server's writes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", args.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    try:
        resume = f"Last-Event-ID: {state['last_id']}\r\n" if state["last_id"] else ""
        writer.write(f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nAccept: text/event-stream\r\n{resume}\r\n"
                     .encode())
        await writer.drain()
        state["active"] = time.time()
        head = await read(args, state, lambda: reader.readuntil(b"\r\n\r\n"))
        status = int(head.split(b" ", 2)[1])
        if index not in started:
            started.append(index)
        if status != 200:
            state["errors"].append(f"status {status}")
            return
        buf = b""
        while state["got"] < limit:
            line = await read(args, state, reader.readline)  # chunk size
            if not line:
                break
            size = int(line.strip() or b"0", 16)
            if size == 0:
                break
            data = await read(args, state, lambda: reader.readexactly(size + 2))
            buf += data[:-2]
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                fields = {}
                for raw in block.split(b"\n"):
                    name, _, value = raw.partition(b":")
                    fields[name.decode()] = value[1:] if value.startswith(b" ") else value
                if "" in fields or ("data" not in fields and "event" not in fields):
                    continue  # a comment (heartbeat) or the retry hint
                kind = fields.get("event", b"message").decode()
                if kind == "message":
                    if state["cut_at"] is not None:
                        state["gaps"].append(time.time() - state["cut_at"])
                        state["cut_at"] = None
                    state["got"] += 1
                    data = fields.get("data", b"")
                    partition = re.search(rb'"partition":(\d+)', data)
                    key = partition.group(1) if partition else b""
                    state["per_partition"].setdefault(key, hashlib.sha1()).update(data + b"\n")
                    event_id = fields.get("id", b"").decode()
                    state["events"].append(event_id)
                    if event_id:
                        state["last_id"] = event_id
                    if state["out"]:
                        offset = re.search(rb'"offset":(\d+)', data)
                        seq = re.search(rb'seq\\?":(\d+)', data)
                        state["out"].write("%s %s %s\n" % (key.decode(), offset.group(1).decode() if offset else "-",
                                                           seq.group(1).decode() if seq else "-"))
                elif kind == "error":
                    state["errors"].append("error event: " + fields.get("data", b"").decode())
                    if not args.resume:
                        state["got"] = limit  # stream is over
                    elif index < args.reconnect_on_error:
                        return  # this client treats an error event as the end of its stream
            if state["out"]:
                state["out"].flush()
            if index == 0 and args.slow and not state["slowed"] and state["got"] > 0:
                state["slowed"] = True
                await asyncio.sleep(args.slow)  # paces the slow client: it does not read for --slow s
    finally:
        writer.close()


async def client(index, args, results, started):
    out = open(os.path.join(args.out, f"{index}.txt"), "w") if args.out else None
    state = {"per_partition": {}, "events": [], "errors": [], "got": 0, "last_id": None, "slowed": False,
             "out": out, "active": time.time(), "cut_at": None, "gaps": [], "broken": 0}
    limit = args.events or float("inf")
    deadline = time.time() + args.timeout
    connections = 0
    while True:
        connections += 1
        try:
            await connection(index, args, state, started)
        except Stop:
            break
        except Exception as exc:  # noqa: BLE001 - reported to the spec
            state["errors"].append(repr(exc))
            state["broken"] += 1
        # --resume: reconnect from the last event id whenever the stream ends or fails, as EventSource does
        if not args.resume or state["got"] >= limit or stopping(args) or time.time() >= deadline:
            break
        if state["cut_at"] is None:
            state["cut_at"] = time.time()
        await asyncio.sleep(args.retry_delay)  # paces the reconnects, as EventSource does
    if out:
        out.close()
    per_partition = state["per_partition"]
    digest = hashlib.sha1(b"".join(k + b":" + h.digest() for k, h in sorted(per_partition.items())))
    results[index] = {"events": len(state["events"]), "digest": digest.hexdigest(), "first": state["events"][:1],
                      "last": state["events"][-1:], "errors": state["errors"], "connections": connections,
                      "gaps": state["gaps"], "broken": state["broken"]}


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--events", type=int, default=0, help="message events per client; 0: no limit")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--slow", type=float, default=0)
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--retry-delay", type=float, default=0.2)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--reconnect-on-error", type=int, default=0, metavar="N",
                        help="with --resume, clients 0..N-1 reconnect on an error event too")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    results, started = {}, []
    tasks = [asyncio.create_task(client(i, args, results, started)) for i in range(args.clients)]
    t0 = time.time()
    if args.ready_file:
        while len(started) < args.clients and time.time() - t0 < args.timeout:
            await asyncio.sleep(0.05)  # the poll interval of this wait, bounded by --timeout
        with open(args.ready_file, "w") as f:
            f.write(str(len(started)))
    done, pending = await asyncio.wait(tasks, timeout=max(0.1, args.timeout - (time.time() - t0)))
    for task in pending:
        task.cancel()
    counts = [results.get(i, {}).get("events", 0) for i in range(args.clients)]
    limit = args.events or float("inf")
    normal = [results[i] for i in range(args.clients) if i in results and not (args.slow and i == 0)]
    print(json.dumps({
        "clients": args.clients,
        "complete": sum(1 for c in counts if c >= limit),
        "sequences": len({r["digest"] for r in normal if r["events"] >= limit}),
        "counts_min": min(counts) if counts else 0,
        "first_ids": sorted({r["first"][0] for r in results.values() if r["first"]})[:3],
        "last_ids": sorted({r["last"][0] for r in results.values() if r["last"]})[:3],
        "slow": results.get(0) if args.slow else None,
        "errors": [e for r in normal for e in r["errors"]][:5],
        "reconnects": sum(r["connections"] - 1 for r in results.values()),
        # streams that ended in a failure (reset, cut mid-chunk, silent for --idle), not a clean end
        "broken": sum(r["broken"] for r in results.values()),
        # --resume: the longest time from a stream's end to the next event on its successor
        "resume_max_s": round(max([g for r in results.values() for g in r["gaps"]], default=0), 3),
        "seconds": round(time.time() - t0, 3),
    }))


asyncio.run(main())
