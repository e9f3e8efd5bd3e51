"""Load test of ``hogwild serve`` (localhost, bounded): requests per minute and p50/p95 time
to first token and to answer at several client counts, against the same requests run one
after another (``--clients 1``).

Starts its own server on a free port (or uses ``--url``), sends the same ``--requests``
streaming chat requests at each client count (the problems cycle through a fixed list, so
every level does the same work), and prints a markdown table (``--json`` writes the raw
numbers). Time to first token: from sending the request to the first chunk with a token a
worker generated (not a protocol header). Time to answer: to the chunk carrying the team's
answer (``delta.content``), which comes after any forced answer.

    .venv/bin/python bench/serve_load.py --clients 1,4,16 --requests 16 --max-tokens 32
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

PROBLEMS = [
    "What is 17 * 3?",
    "Tom has 3 boxes with 4 pens each. He gives away 5. How many are left?",
    "A train travels 60 km in 1.5 hours. What is its speed in km/h?",
    "What is the sum of the first 10 positive integers?",
    "Alice has 12 apples and gives a third to Bob. How many does she keep?",
    "What is 2 to the power of 9?",
    "A rectangle is 7 by 8. What is its area?",
    "What is 144 divided by 12?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-c", "from hogwild.cli import main; main()", "serve", "--model", args.model,
               "--port", str(port), "--workers", str(args.workers), "--max-running", str(max(args.levels)),
               "--log-level", "warning"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, base
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server was not ready in 300 s")


def one_request(base: str, problem: str, args: argparse.Namespace) -> dict:
    url = urlparse(base)
    body = {"model": args.model, "messages": [{"role": "user", "content": problem}], "max_tokens": args.max_tokens,
            "stream": True}
    started = time.perf_counter()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first = answer = None
    passes = 0
    buffer = b""
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if not event.startswith(b"data: "):
                continue
            data = event[6:]
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            now = time.perf_counter() - started
            for choice in chunk["choices"]:
                delta = choice.get("delta", {})
                if first is None and delta.get("reasoning_content") and "hogwild" not in chunk:
                    first = now
                if answer is None and choice.get("finish_reason"):
                    answer = now
            info = chunk.get("hogwild") or {}
            if info.get("event") == "done":
                passes = info["passes"]
    conn.close()
    total = time.perf_counter() - started
    return {"ttft": first if first is not None else total, "answer": answer if answer is not None else total,
            "total": total, "passes": passes}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_level(base: str, clients: int, args: argparse.Namespace) -> dict:
    jobs = [PROBLEMS[i % len(PROBLEMS)] for i in range(args.requests)]
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not jobs:
                    return
                problem = jobs.pop(0)
            try:
                result = one_request(base, problem, args)
            except Exception as error:  # noqa: BLE001 - reported in the table
                with lock:
                    errors.append(str(error))
                continue
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ttft = [r["ttft"] for r in results] or [float("nan")]
    answer = [r["answer"] for r in results] or [float("nan")]
    return {"clients": clients, "requests": len(results), "errors": len(errors), "wall_s": wall,
            "rpm": 60 * len(results) / wall, "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
            "answer_p50": percentile(answer, 0.5), "answer_p95": percentile(answer, 0.95),
            "passes": sum(r["passes"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", default="1,4,16", help="client counts, comma-separated (1 = one after another)")
    parser.add_argument("--requests", type=int, default=16, help="requests per client count")
    parser.add_argument("--max-tokens", type=int, default=32, help="budget of each request, in forward passes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the server it starts")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.clients.split(",") if c]
    proc = None
    base = args.url
    if base is None:
        proc, base = start_server(args)
    try:
        one_request(base, PROBLEMS[0], args)  # warm-up: shared prefixes cached, kernels loaded
        rows = [run_level(base, c, args) for c in args.levels]
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    base_rpm = next((r["rpm"] for r in rows if r["clients"] == 1), None)
    print(f"\n{args.requests} requests per row, {args.workers} workers, max_tokens {args.max_tokens}, "
          f"model {args.model}\n")
    print("| clients | requests/min | vs one after another | TTFT p50 / p95 (s) | answer p50 / p95 (s) | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['rpm'] / base_rpm:.2f}x" if base_rpm else "-"
        print(f"| {r['clients']} | {r['rpm']:.1f} | {ratio} | {r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | "
              f"{r['answer_p50']:.2f} / {r['answer_p95']:.2f} | {r['errors']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "levels"}, "rows": rows}, f, indent=1)
    if statistics.fmean(r["errors"] for r in rows) > 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
