"""Load test of ``headstart serve`` on loopback, against offline prediction with the same engine.

    python benchmarks/bench_serve.py RUN IMAGES [--clients 16] [--seconds 60]

For PyTorch (the run folder) and ONNX Runtime (RUN/model.onnx, exported if
missing), with and without micro-batching, it starts a server on 127.0.0.1,
runs N concurrent clients that each post one image per request until the time
or request bound, and prints throughput, p50/p95/p99 latency and errors; then
offline ``predict_proba`` throughput on the same images and the ratio. Every
request goes to this machine's loopback only. Run by hand; not a test.
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "headstart", "-q", "serve", str(model), "--port", str(port),
                                "--max-wait-ms", str(max_wait_ms)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server for {model} did not start: {process.stderr.read().decode()[-2000:]}")


def load(url: str, images: list[Path], clients: int, seconds: float, max_requests: int) -> dict:
    latencies, errors, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + seconds
    payloads = [(p.name, p.read_bytes()) for p in images]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if len(latencies) + len(errors) >= max_requests:
                        return
                name, data = rng.choice(payloads)
                start = time.perf_counter()
                try:
                    response = http.post(f"{url}/predict", files=[("files", (name, data, "image/jpeg"))])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    (latencies if ok else errors).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"requests": len(latencies), "errors": len(errors), "img_s": len(latencies) / elapsed,
            "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000}


def offline(model: Path, images: list[Path]) -> float:
    code = ("import sys, time; from pathlib import Path; from headstart.model import open_model;"
            "p = open_model(sys.argv[1]); paths = [Path(x) for x in sys.argv[2:]];"
            "p.predict_proba(paths[:32]); t = time.perf_counter(); p.predict_proba(paths);"
            "print(len(paths) / (time.perf_counter() - t))")
    out = subprocess.run([sys.executable, "-c", code, str(model), *map(str, images)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--offline-images", type=int, default=300)
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    onnx = args.run / "model.onnx"
    if not onnx.exists():
        subprocess.run([sys.executable, "-m", "headstart", "-q", "export", str(args.run)], check=True)
    print(f"{args.clients} clients, {args.seconds:g} s or {args.max_requests} requests, {len(images)} images, "
          f"{os.cpu_count()} cores\n")
    for label, model in (("pytorch", args.run), ("onnx", onnx)):
        rate = offline(model, images[: args.offline_images])
        print(f"{label}: offline predict {rate:.1f} img/s")
        for wait in (5.0, 0.0):
            process, url = start_server(model, wait)
            try:
                r = load(url, images, args.clients, args.seconds, args.max_requests)
            finally:
                process.terminate()
                process.wait(timeout=30)
            batching = f"micro-batching {wait:g} ms" if wait else "no batching"
            print(f"  served, {batching:22s} {r['img_s']:6.1f} img/s ({r['img_s'] / rate:4.0%} of offline)  "
                  f"p50 {r['p50']:6.0f} ms  p95 {r['p95']:6.0f} ms  p99 {r['p99']:6.0f} ms  "
                  f"{r['requests']} ok, {r['errors']} errors")


if __name__ == "__main__":
    main()
