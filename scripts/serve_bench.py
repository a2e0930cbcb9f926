"""Load benchmark of ``editscope serve`` on the built-in model, against a local server.

Starts ``editscope serve`` (a subprocess on 127.0.0.1, rate limit off) on a copy of ``--store``
(or on a new built-in store), then measures:

- queries/s and p50/p99 latency with 1, 4 and 16 concurrent clients (idle writer);
- edits/s: ``--edits`` edits posted back to back, from the first post to the last applied;
- query latency (4 clients) while a stream of edits is applied.

Usage: ``python scripts/serve_bench.py [--store DIR] [--queries 48] [--edits 10]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

READY = re.compile(r"serving store .* on (http://127\.0\.0\.1:\d+)")


HEADERS: dict[str, str] = {}  # the bench's own API key, set in main


def post(url: str, body: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **HEADERS})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get(url: str, timeout: float = 300.0) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=HEADERS), timeout=timeout) as response:
        return json.loads(response.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def world_requests(n: int, split: str) -> list[dict[str, Any]]:
    """``n`` edits of the built-in world (distinct facts), images base64-encoded PNG."""
    from editscope import world as world_module
    from editscope.world.edits import record_images

    world = world_module.load_world()
    requests = []
    for record in world_module.make_records(world, split, n=n):
        buffer = io.BytesIO()
        record_images(world, record)[record["image"]].save(buffer, format="PNG")
        requests.append({"prompt": record["src"], "target": record["alt"],
                         "image": base64.b64encode(buffer.getvalue()).decode()})
    return requests


class Server:
    def __init__(self, store: Path) -> None:
        import editscope

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(Path(editscope.__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "editscope.cli.main", "serve", "--store", str(store), "--port", "0",
             "--rate-limit", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = READY.search(line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise SystemExit("the server did not start")
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_queries(url: str, probes: list[dict[str, Any]], clients: int, total: int,
                stop: threading.Event | None = None) -> list[float]:
    """Latencies (s) of ``total`` queries spread over ``clients`` threads (or, with ``stop``,
    of as many as they make until it is set)."""
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def client() -> None:
        while not failures:
            with lock:
                n = next(counter)
            if (stop is None and n >= total) or (stop is not None and stop.is_set()):
                return
            started = time.perf_counter()
            try:
                post(url + "/v1/query", probes[n % len(probes)])
            except BaseException as error:  # reported by the caller
                failures.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"a query failed: {failures[0]}")
    return latencies


def stream_edits(url: str, requests: list[dict[str, Any]]) -> tuple[float, list[float], int]:
    """Post ``requests`` back to back; (seconds until the last is applied, ack latencies, applied)."""
    started = time.perf_counter()
    acks, ids = [], []
    for body in requests:
        sent = time.perf_counter()
        ids.append(post(url + "/v1/edits", body)["id"])
        acks.append(time.perf_counter() - sent)
    statuses = []
    for edit_id in ids:
        while (record := get(f"{url}/v1/edits/{edit_id}?wait=60"))["status"] == "pending":
            pass
        statuses.append(record["status"])
    return time.perf_counter() - started, acks, statuses.count("applied")


def row(label: str, latencies: list[float], seconds: float | None = None) -> str:
    rate = f"{len(latencies) / seconds:8.1f}" if seconds else " " * 8
    return (f"{label:<34} {len(latencies):>5} {rate}  {1000 * statistics.median(latencies):8.1f}"
            f"  {1000 * percentile(latencies, 99):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="a store to copy (default: a new built-in store)")
    parser.add_argument("--queries", type=int, default=48, help="queries per concurrency level")
    parser.add_argument("--edits", type=int, default=10, help="edits in each edit stream")
    args = parser.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        store = work / "store"
        if args.store:
            shutil.copytree(args.store, store, ignore=shutil.ignore_patterns("lock"))
        else:
            from editscope.store import EditStore

            print("creating a built-in store ...", flush=True)
            EditStore.init(store, "builtin").close()
        from editscope.service.keys import KeyRing

        ring = KeyRing(store)  # the copy's own key: the store may have keys, and then needs one
        HEADERS["Authorization"] = "Bearer " + ring.add(f"serve-bench-{os.getpid()}", "editor")[1]
        ring.close()
        edits = world_requests(2 * args.edits, "dev")
        probes = [{"prompt": e["prompt"], "image": e["image"]} for e in edits]
        server = Server(store)
        try:
            print(f"editscope serve on the built-in model, {os.cpu_count()} CPU cores, torch {torch.__version__}")
            print(f"{'':<34} {'n':>5} {'per s':>8}  {'p50 ms':>8}  {'p99 ms':>8}")
            run_queries(server.url, probes, 1, 4)  # warm-up
            for clients in (1, 4, 16):
                started = time.perf_counter()
                latencies = run_queries(server.url, probes, clients, args.queries)
                print(row(f"queries, {clients} client(s)", latencies, time.perf_counter() - started), flush=True)
            seconds, acks, applied = stream_edits(server.url, edits[: args.edits])
            print(row(f"edits ({applied} applied), ack", acks) + f"   {args.edits / seconds:.2f} edits/s applied",
                  flush=True)
            stop = threading.Event()
            during: list[float] = []
            background = threading.Thread(target=lambda: during.extend(run_queries(server.url, probes, 4, 0, stop)))
            background.start()
            started = time.perf_counter()
            seconds, _, applied = stream_edits(server.url, edits[args.edits:])
            stop.set()
            background.join()
            print(row("queries, 4 clients, edits streaming", during, time.perf_counter() - started)
                  + f"   ({applied} edits applied meanwhile, {args.edits / seconds:.2f} edits/s)", flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
