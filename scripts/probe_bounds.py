#!/usr/bin/env python3
"""Re-runs the probes of RELIABILITY.md's "Bounded by bytes" section against a running
oddsbus (default http://127.0.0.1:8000), each while a thread polls /healthz, and prints
/healthz p50/p99/max during the probe and the server's RSS before and after.

    scripts/probe_bounds.py --pid $(pgrep -n oddsbus) [--url http://127.0.0.1:8000] [PROBE...]

Probes: big_snapshot, moves_loop, since, history_bytes. Standard library only.
"""
import argparse
import http.client
import json
import socket
import statistics
import threading
import time
import urllib.parse


def request(url, method="GET", path="/healthz", body=None, timeout=120):
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"content-type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Health(threading.Thread):
    """Polls /healthz until stopped, keeping each round trip's time."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.times, self.stop = url, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            request(self.url)
            self.times.append(time.perf_counter() - started)
            time.sleep(0.01)

    def report(self):
        self.stop.set()
        self.join()
        times = sorted(self.times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (f"/healthz p50 {statistics.median(times) * 1000:.1f} ms, "
                f"p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms ({len(times)} polls)")


def snapshot(event_id, markets, outcomes, price=2.0):
    rows = [{"name": f"outcome {o}", "odds": price + o / 100} for o in range(outcomes)]
    return {"event_id": event_id,
            "markets": [{"market_id": f"market {m}", "name": "M", "outcomes": rows}
                        for m in range(markets)]}


def big_snapshot(url):
    """The largest snapshot the bounds allow (1,000 markets of 100 outcomes), with a board
    polling /api/moves meanwhile."""
    body = json.dumps({"source": "betpawa", "snapshots": [snapshot(990001, 1000, 100)]})
    stop = threading.Event()

    def board():
        while not stop.is_set():
            request(url, path="/api/moves?minutes=10&limit=10")
            time.sleep(0.5)

    threading.Thread(target=board, daemon=True).start()
    started = time.perf_counter()
    status, _ = request(url, "POST", "/api/odds", body.encode())
    took = time.perf_counter() - started
    time.sleep(2)  # let the recorder take it while /healthz is polled
    stop.set()
    return f"{len(body) / 1e6:.1f} MB snapshot: {status} in {took * 1000:.0f} ms"


def moves_loop(url):
    """Four callers looping /api/moves (each window) for 10 s."""
    stop, calls = threading.Event(), [0]

    def caller(minutes):
        while not stop.is_set():
            request(url, path=f"/api/moves?minutes={minutes}&limit=500")
            calls[0] += 1

    threads = [threading.Thread(target=caller, args=(m,), daemon=True) for m in (1, 10, 30, 60)]
    for thread in threads:
        thread.start()
    time.sleep(10)
    stop.set()
    for thread in threads:
        thread.join()
    return f"{calls[0]} /api/moves calls in 10 s"


def since(url):
    """200 connections asking with a 60 KB since, none reading."""
    parts = urllib.parse.urlsplit(url)
    value = ",".join(["odds_updates:e:x"] * 3500)
    statuses = {}
    sockets = []
    for _ in range(200):
        s = socket.create_connection((parts.hostname, parts.port))
        s.sendall((f"GET /api/ws?since={value} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
                   "connection: upgrade\r\nsec-websocket-version: 13\r\n"
                   "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        sockets.append(s)
    for s in sockets:
        line = s.recv(64).split(b"\r\n")[0].decode()
        statuses[line] = statuses.get(line, 0) + 1
        s.close()
    return f"200 handshakes with a {len(value) // 1000} KB since: {statuses}"


def history_bytes(url):
    """3,000 events of 2,000 outcomes each (about 1.7 GB of history unbounded), each posted
    twice with other prices."""
    for round_ in range(2):
        for first in range(0, 3000, 10):
            snapshots = [snapshot(800000 + e, 20, 100, 2.0 + round_ / 10)
                         for e in range(first, first + 10)]
            request(url, "POST", "/api/odds",
                    json.dumps({"source": "sportybet", "snapshots": snapshots}).encode())
    time.sleep(3)
    _, metrics = request(url, path="/metrics")
    held = [line for line in metrics.decode().splitlines()
            if line.startswith("oddsbus_price_history_")]
    return "; ".join(held)


PROBES = {"big_snapshot": big_snapshot, "moves_loop": moves_loop, "since": since,
          "history_bytes": history_bytes}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("probes", nargs="*", default=list(PROBES))
    args = parser.parse_args()
    for name in args.probes:
        before = rss_mib(args.pid)
        health = Health(args.url)
        health.start()
        what = PROBES[name](args.url)
        print(f"{name}: {what}; {health.report()}; RSS {before:.0f} -> {rss_mib(args.pid):.0f} MiB",
              flush=True)


if __name__ == "__main__":
    main()
