"""The GPU paths on real photos: feature engines, both workflows, fine-tuning and prediction.

    python benchmarks/bench_gpu.py ../shared/datasets/cats_and_dogs_filtered

Run by hand on a machine with a CUDA GPU; not a test. Prints each feature
engine's throughput on the GPU against eager fp32 measured in the same run,
with its feature error, then runs ``headstart train`` (lightweight; the GPU
default, which fine-tunes under mixed precision; standard), ``predict`` and
``export``, each in a fresh process as a user runs them, with wall time, the
seconds of every epoch, validation accuracy and the GPU's peak memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headstart._console import Console
from headstart.backbone.pretrained import create_backbone
from headstart.config import BackboneRequest
from headstart.data.images import collect_images, network_input
from headstart.features.engines import PooledFeatures, create_engine, feature_error


def engines(data: Path, batch: int, names: list[str]) -> None:
    backbone, _, pre = create_backbone(BackboneRequest("efficientnet_lite0"))
    net = PooledFeatures(backbone, pre).eval()
    images = np.stack([network_input(p, pre) for p in collect_images([data])[:batch]])
    device = torch.device("cuda")
    reference = eager = None
    for name in names:
        engine = create_engine(name, net, pre.input_size, device, lambda n: Path(tempfile.mkdtemp()) / n,
                               None, Console(0))
        features = engine(images)  # warm-up: cuDNN picks its kernels
        times = []
        for _ in range(5):
            start = time.perf_counter()
            engine(images)  # returns CPU features: the GPU has finished
            times.append(time.perf_counter() - start)
        speed = len(images) / statistics.median(times)
        reference = features if reference is None else reference
        eager = eager or speed
        print(f"engine {name:6s} {speed:8.0f} img/s  {speed / eager:5.2f}x eager fp32  "
              f"feature error vs eager {feature_error(features, reference):.1e}  (batch {len(images)}, "
              f"uint8 from host memory)")


# `headstart ARGV` in a fresh process, as a user runs it: one-time costs (CUDA context,
# kernel loading) land in each command, not only in the first. Reports the GPU's peak memory.
_HEADSTART = """
import json, sys, torch
from headstart.cli import main
status = main(sys.argv[1:])
print("BENCH " + json.dumps({"gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30}), file=sys.stderr)
sys.exit(status)
"""


def cli(*argv) -> tuple[float, str, float]:
    """Wall seconds, the log and the GPU peak GiB of one command; stops the benchmark on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _HEADSTART, *map(str, argv)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"headstart {' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = [json.loads(line[6:]) for line in proc.stderr.splitlines() if line.startswith("BENCH ")]
    return seconds, proc.stderr, peak[0]["gpu_peak_gib"]


def train(data: Path, out: Path, cache: Path, *options: str) -> None:
    seconds, log, peak = cli("train", data, "--out", out, "--cache-dir", cache, "--device", "cuda", *options)
    metrics = json.loads((out / "metrics.json").read_text())
    per_stage: dict[str, list[str]] = {}
    for row in csv.DictReader(open(out / "history.csv")):
        per_stage.setdefault(row["stage"], []).append(f"{float(row['seconds']):.1f}")
    stages = "; ".join(f"{stage} epochs {', '.join(s)} s" for stage, s in per_stage.items())
    fine = metrics["fine_tune"]
    fine_text = f"; fine-tuning {'kept' if fine['kept'] else 'not kept'}" if fine else ""
    extraction = ""
    if "features" in metrics and metrics["features"]["computed"]:
        f = metrics["features"]
        extraction = f"; features {f['engine']} {f['computed'] / f['seconds']:.0f} img/s"
    print(f"train {' '.join(options) or '(defaults)'}: {seconds:.1f} s wall ({stages}{extraction}{fine_text}), "
          f"val accuracy {metrics['val']['accuracy']:.2%}, GPU peak {peak:.1f} GiB")
    precision = [line for line in log.splitlines() if "workflow on" in line]
    print(f"  {precision[0].strip() if precision else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder with train/ and val/ (or validation/)")
    parser.add_argument("--batch", type=int, default=256, help="images per engine call")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU; benchmarks/bench_workflows.py measures the CPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 "
          f"{'supported' if torch.cuda.is_bf16_supported() else 'unsupported'}\n")
    engines(args.data, args.batch, ["eager", "bf16", "fp16"] + (["compile"] if args.compile else []))

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    cache = work / "cache"
    print()
    train(args.data, work / "light", cache, "--workflow", "lightweight", "--fine-tune-epochs", "0")
    train(args.data, work / "auto", cache)  # the GPU default: cached features, then fine-tuning
    train(args.data, work / "standard", cache, "--workflow", "standard", "--epochs", "2",
          "--fine-tune-epochs", "1")

    validation = next(p for p in (args.data / "validation", args.data / "val") if p.is_dir())
    images = len(collect_images([validation]))
    seconds, _, peak = cli("predict", work / "auto", validation, "--output", work / "predictions.csv",
                           "--batch-size", "128")
    print(f"\npredict {images} images: {seconds:.1f} s wall, {images / seconds:.0f} img/s, GPU peak {peak:.1f} GiB")
    seconds, log, _ = cli("export", work / "auto", "--out", work / "model.onnx", "--check-images", "64")
    parity = [line for line in log.splitlines() if "parity" in line]
    print(f"export from the GPU-trained model: {seconds:.1f} s; {parity[0].strip() if parity else log[-500:]}")


if __name__ == "__main__":
    main()
