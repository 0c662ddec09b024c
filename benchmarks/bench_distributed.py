"""Data-parallel throughput: feature extraction and fine-tuning on 1 process, then on N under torchrun.

    python benchmarks/bench_distributed.py ../shared/datasets/hymenoptera_data --nproc 2

Run by hand; not a test. Each measurement is ``headstart train`` in fresh processes, as a user
runs it: 1 process (the baseline, measured in the same run), then ``--nproc N`` (torchrun on
this machine; on CPUs the ranks split the cores). Extraction starts from an empty feature cache
(each run its own), so every image goes through the backbone; its rate is images over the
pipeline's seconds (decoding, the engine and, on N processes, gathering the features on rank
0). Fine-tuning then runs ``--fine-tune-epochs`` epochs end to end on features already cached;
its rate is training images over the seconds of the fine-tuning epochs (validation included).
On a GPU machine, ``--nproc`` is the number of GPUs to use, one process each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def headstart(argv: list[str], nproc: int) -> float:
    """Run ``headstart ARGV`` (on ``nproc`` processes when above 1); returns its wall time."""
    command = [sys.executable, "-m", "headstart", *argv, *(["--nproc", str(nproc)] if nproc > 1 else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(data: Path, nproc: int, work: Path, fine_tune_epochs: int, extra: list[str]) -> dict:
    cache = work / f"cache-{nproc}"
    run = work / f"extract-{nproc}"
    wall = headstart(["train", str(data), "--out", str(run), "--cache-dir", str(cache), "--workflow", "lightweight",
                      "--fine-tune-epochs", "0", *extra], nproc)
    features = json.loads((run / "metrics.json").read_text())["features"]
    result = {"extract_wall": wall, "images": features["computed"], "extract_seconds": features["seconds"],
              "engine": features["engine"]}
    run = work / f"finetune-{nproc}"
    wall = headstart(["train", str(data), "--out", str(run), "--cache-dir", str(cache), "--workflow", "lightweight",
                      "--fine-tune-epochs", str(fine_tune_epochs), "--patience", "0", *extra], nproc)
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "history.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f) if row["stage"] == "fine-tune"]
    result.update(finetune_wall=wall, finetune_seconds=sum(seconds), epochs=len(seconds),
                  train_images=sum(metrics["counts"]["train"].values()), val_accuracy=metrics["val"]["accuracy"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more `headstart train` options, after --")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; {args.data}")
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as work:
        results = {n: measure(args.data, n, Path(work), args.fine_tune_epochs, args.extra) for n in (1, args.nproc)}
    base = results[1]
    for n, r in results.items():
        extract_rate = r["images"] / r["extract_seconds"]
        tune_rate = r["train_images"] * r["epochs"] / r["finetune_seconds"]
        print(f"{n} process(es): extraction {r['images']} images in {r['extract_seconds']:.1f} s = "
              f"{extract_rate:.1f} img/s ({r['engine']}; command {r['extract_wall']:.1f} s) | fine-tuning "
              f"{r['epochs']} epoch(s) of {r['train_images']} images in {r['finetune_seconds']:.1f} s = "
              f"{tune_rate:.1f} img/s (command {r['finetune_wall']:.1f} s), val accuracy {r['val_accuracy']:.2%}")
    r = results[args.nproc]
    print(f"ratio {args.nproc} / 1 process: extraction "
          f"{(r['images'] / r['extract_seconds']) / (base['images'] / base['extract_seconds']):.2f}x, "
          f"fine-tuning {(r['train_images'] * r['epochs'] / r['finetune_seconds']) / (base['train_images'] * base['epochs'] / base['finetune_seconds']):.2f}x")


if __name__ == "__main__":
    main()
