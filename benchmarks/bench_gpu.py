"""The GPU paths on real photos: feature engines, both workflows, fine-tuning and prediction.

    python benchmarks/bench_gpu.py ../shared/datasets/cats_and_dogs_filtered

Run by hand on a machine with a CUDA GPU; not a test. Prints each feature
engine's throughput on the GPU against eager fp32 measured in the same run,
with its feature error, then runs ``headstart train`` (lightweight; the GPU
default, which fine-tunes under mixed precision; standard), ``predict`` and
``export`` in-process as a user runs them, with wall time, validation accuracy
and the GPU's peak memory for each.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from headstart._console import Console
from headstart.backbone import create_backbone
from headstart.cli import main as headstart
from headstart.config import HeadSpec
from headstart.data import ImageDataset
from headstart.images import collect_images
from headstart.engine import create_engine, feature_error
from headstart.head import ClassifierNet, Head


def engines(data: Path, batch: int, names: list[str]) -> None:
    backbone, spec, pre = create_backbone("efficientnet_lite0")
    net = ClassifierNet(backbone, Head(spec.num_features, HeadSpec(2)), pre).eval()
    dataset = ImageDataset.for_eval(collect_images([data])[:batch], None, pre)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
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


def cli(*argv: str) -> tuple[float, str]:
    """``headstart ARGV`` in this process: wall seconds and the log; stops the benchmark on failure."""
    torch.cuda.reset_peak_memory_stats()
    err = io.StringIO()
    start = time.perf_counter()
    status = headstart([str(a) for a in argv], Console(1, err=err, out=io.StringIO()))
    seconds = time.perf_counter() - start
    if status:
        sys.exit(f"headstart {' '.join(map(str, argv))} failed ({status}):\n{err.getvalue()[-3000:]}")
    return seconds, err.getvalue()


def peak_gb() -> str:
    return f"GPU peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


def train(data: Path, out: Path, cache: Path, *options: str) -> None:
    seconds, log = cli("train", data, "--out", out, "--cache-dir", cache, "--device", "cuda", *options)
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [row for row in csv.DictReader(open(out / "history.csv"))]
    per_stage = {}
    for row in epochs:
        per_stage.setdefault(row["stage"], []).append(float(row["seconds"]))
    stages = ", ".join(f"{stage} {len(s)} x {statistics.median(s):.1f} s" for stage, s in per_stage.items())
    fine = metrics["fine_tune"]
    fine_text = f"; fine-tuning {'kept' if fine['kept'] else 'not kept'}" if fine else ""
    extraction = ""
    if "features" in metrics and metrics["features"]["computed"]:
        f = metrics["features"]
        extraction = f"; features {f['engine']} {f['computed'] / f['seconds']:.0f} img/s"
    print(f"train {' '.join(options) or '(defaults)'}: {seconds:.1f} s wall ({stages}{extraction}{fine_text}), "
          f"val accuracy {metrics['val']['accuracy']:.2%}, {peak_gb()}")
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
    seconds, _ = cli("predict", work / "auto", validation, "--output", work / "predictions.csv",
                     "--batch-size", "128")
    print(f"\npredict {images} images: {seconds:.1f} s wall, {images / seconds:.0f} img/s, {peak_gb()}")
    seconds, log = cli("export", work / "auto", "--out", work / "model.onnx", "--check-images", "64")
    parity = [line for line in log.splitlines() if "parity" in line]
    print(f"export from the GPU-trained model: {seconds:.1f} s; {parity[0].strip() if parity else log[-500:]}")


if __name__ == "__main__":
    main()
