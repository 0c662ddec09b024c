"""Lightweight workflow against a plain-PyTorch baseline, measured in one run on the same data.

    python benchmarks/bench_workflows.py ../shared/datasets/cats_and_dogs_filtered

Prints decode and engine throughput (eager fp32 is the baseline), then the wall
time of ``headstart train --workflow lightweight`` run three ways: the first run
with an empty cache (PyTorch exports and checks the engine), cold (no cached
features, the engine and backbone record kept from an earlier run on the
machine) and warm (another head setting, every feature cached); head-fit time,
validation accuracy and peak RSS, the same figures for a tutorial-style
PyTorch script (ImageFolder + DataLoader + frozen backbone + linear head, SGD),
and the ratios. Every command runs in its own process, so start-up and peak
memory are counted as a user sees them. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs a command in a child process and reports its own peak RSS on the last stderr line.
# VmHWM, not getrusage: Linux carries ru_maxrss over fork and exec, so a child of
# this (large) process would report the parent's peak.
_MEASURED = """
import json, sys
status = 0
try:
    {body}
finally:
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    print("BENCH " + json.dumps({{"rss_mb": int(hwm.split()[1]) / 1024}}), file=sys.stderr)
sys.exit(int(status))
"""

# The console script's own entry point, exit included, as a user runs `headstart`.
_HEADSTART = "from headstart.cli import run; run()"

# What a cold or warm run imports (no PyTorch), then what a run through PyTorch adds.
_IMPORTS = """
import time
start = time.perf_counter()
import headstart.model, headstart.cli, headstart.report
light = time.perf_counter() - start
import headstart.backbone.pretrained, headstart.training.network, headstart.features.engines
print("BENCH " + json.dumps({"light_s": light, "torch_s": time.perf_counter() - start - light}), file=sys.stderr)
"""

_BASELINE = r"""
import time, torch, timm, torchvision
from torch import nn
from torchvision import datasets, transforms
from headstart.backbone.pretrained import create_pretrained
data, epochs = sys.argv[1], int(sys.argv[2])
model, _ = create_pretrained("efficientnet_lite0")
model.reset_classifier(0)  # the backbone, pooled features out
for p in model.parameters():
    p.requires_grad = False
model.eval()
tf = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                         transforms.CenterCrop(224), transforms.ToTensor(),
                         transforms.Normalize([0.5] * 3, [0.5] * 3)])
train = datasets.ImageFolder(f"{data}/train", tf)
val = datasets.ImageFolder(f"{data}/validation" if os.path.isdir(f"{data}/validation") else f"{data}/val", tf)
train_loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=2)
val_loader = torch.utils.data.DataLoader(val, batch_size=32, num_workers=2)
head = nn.Linear(model.num_features, len(train.classes))
opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(epochs):
    head.train()
    for x, y in train_loader:
        with torch.no_grad():
            f = model(x)
        loss = loss_fn(head(f), y)
        opt.zero_grad(); loss.backward(); opt.step()
correct = n = 0
with torch.no_grad():
    for x, y in val_loader:
        correct += (head(model(x)).argmax(1) == y).sum().item(); n += len(y)
print("BENCH " + json.dumps({"val_accuracy": correct / n}), file=sys.stderr)
"""


def measured(body: str, argv: list[str], env: dict | None = None) -> dict:
    """Run ``body`` in a fresh Python; returns wall seconds, exit status and what it reported."""
    code = _MEASURED.format(body=body.strip().replace("\n", "\n    "))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import os, sys\n" + code, *argv], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    out = {"seconds": time.perf_counter() - start, "status": proc.returncode}
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH "):
            out.update(json.loads(line[6:]))
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
    return out


def train_lightweight(data: Path, out: Path, cache: Path, *extra: str) -> dict:
    result = measured(_HEADSTART, ["-q", "train", str(data), "--workflow", "lightweight", "--out", str(out),
                                   "--overwrite", "--cache-dir", str(cache), *extra])
    metrics = json.loads((out / "metrics.json").read_text())
    result.update(val_accuracy=metrics["val"]["accuracy"], head_seconds=metrics["head"]["seconds"],
                  extraction_seconds=metrics["features"]["seconds"], engine=metrics["features"]["engine"],
                  computed=metrics["features"]["computed"])
    return result


def throughput(data: Path, batches: int, compile_: bool) -> dict:
    """Decode img/s, and each engine's img/s on the same real images (median of repeats)."""
    import numpy as np
    import torch

    from headstart._console import Console
    from headstart.backbone.pretrained import create_backbone
    from headstart.config import BackboneRequest
    from headstart.data.images import collect_images, network_input
    from headstart.data.loader import ImageDataset, make_loader
    from headstart.features.engines import PooledFeatures, create_engine, feature_error

    backbone, _, pre = create_backbone(BackboneRequest("efficientnet_lite0"))
    net = PooledFeatures(backbone, pre).eval()
    paths = collect_images([data])[: 64 * batches]
    out = {}
    for workers in (0, 2):
        start = time.perf_counter()
        n = sum(len(b.indices) for b in make_loader(ImageDataset.for_eval(paths, None, pre), 64, workers=workers))
        out[f"decode_{workers}w"] = n / (time.perf_counter() - start)
    images = np.stack([network_input(p, pre) for p in paths[:64]])
    tmp = Path(tempfile.mkdtemp())
    names = ["eager", "bf16", "onnx"] + (["compile"] if compile_ else [])
    reference = None
    for name in names:
        start = time.perf_counter()
        engine = create_engine(name, net, pre.input_size, torch.device("cpu"), lambda n: tmp / f"{n}.onnx",
                               None, Console(0))
        features = engine(images)  # warm-up (compiles, for `compile`)
        setup = time.perf_counter() - start
        times = []
        for _ in range(3):
            start = time.perf_counter()
            engine(images)
            times.append(time.perf_counter() - start)
        reference = features if reference is None else reference
        out[name] = {"img_s": 64 / statistics.median(times), "setup_s": setup,
                     "error_vs_eager": feature_error(features, reference)}
    return out


def scaled_copy(data: Path, times: int, root: Path) -> Path:
    """``data`` listed ``times`` times under different names (symlinks): same photos, more files."""
    for split in (p for p in data.iterdir() if p.is_dir()):
        for cls in (p for p in split.iterdir() if p.is_dir()):
            target = root / split.name / cls.name
            target.mkdir(parents=True, exist_ok=True)
            for image in cls.iterdir():
                for k in range(times):
                    (target / f"{k}_{image.name}").symlink_to(image.resolve())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder with train/ and val/ (or validation/)")
    parser.add_argument("--repeats", type=int, default=3, help="cold and warm runs, for medians")
    parser.add_argument("--baseline-epochs", type=int, default=2)
    parser.add_argument("--scale", type=int, default=0, help="also measure peak RSS on the set listed N times")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    print(f"data {args.data}; scratch {work}; {os.cpu_count()} cores\n")

    speed = throughput(args.data, batches=8, compile_=args.compile)
    print(f"decode (eval transform, uint8): {speed['decode_0w']:.0f} img/s in-process, "
          f"{speed['decode_2w']:.0f} img/s with 2 workers")
    eager = speed["eager"]["img_s"]
    for name in ("eager", "bf16", "onnx", "compile"):
        if name in speed:
            s = speed[name]
            print(f"engine {name:8s} {s['img_s']:6.1f} img/s  {s['img_s'] / eager:4.2f}x eager fp32  "
                  f"setup {s['setup_s']:5.1f} s  feature error vs eager {s['error_vs_eager']:.1e}")

    first, cold, warm = [], [], []
    for i in range(args.repeats):
        cache = work / f"cache{i}"
        first.append(train_lightweight(args.data, work / f"first{i}", cache))
        shutil.rmtree(cache / "features")
        cold.append(train_lightweight(args.data, work / f"cold{i}", cache))
        warm.append(train_lightweight(args.data, work / f"warm{i}", cache, "--class-weight", "balanced"))
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    n_images = cold[0]["computed"]
    print(f"\nheadstart lightweight ({cold[0]['engine']}), {n_images} images, median of {args.repeats}:")
    print(f"  first run, empty cache: {med(first, 'seconds'):.1f} s wall (extraction "
          f"{med(first, 'extraction_seconds'):.1f} s, engine export included), peak RSS {med(first, 'rss_mb'):.0f} MB")
    print(f"  cold, no cached features: {med(cold, 'seconds'):.1f} s wall (extraction "
          f"{med(cold, 'extraction_seconds'):.1f} s = {n_images / med(cold, 'extraction_seconds'):.0f} img/s), "
          f"peak RSS {med(cold, 'rss_mb'):.0f} MB")
    print(f"  warm (another head setting): {med(warm, 'seconds'):.1f} s wall, head fit "
          f"{med(warm, 'head_seconds'):.2f} s, {warm[0]['computed']} images recomputed")
    print(f"  validation accuracy {cold[0]['val_accuracy']:.2%}")
    imports = measured(_IMPORTS, [])
    print(f"  importing headstart with scikit-learn, SciPy and matplotlib (cold and warm runs): "
          f"{imports['light_s']:.1f} s; PyTorch, torchvision and timm on top (a run through PyTorch): "
          f"{imports['torch_s']:.1f} s more, {imports['rss_mb']:.0f} MB RSS with all of them")

    if args.scale:
        big = scaled_copy(args.data, args.scale, work / "scaled")
        # A cold run: new file names, so no cached features; the engine kept from the runs above.
        run = train_lightweight(big, work / "scaled-run", work / "cache0")
        print(f"  x{args.scale} ({run['computed']} images): cold {run['seconds']:.0f} s, "
              f"peak RSS {run['rss_mb']:.0f} MB (vs {med(cold, 'rss_mb'):.0f} MB)")

    if not args.skip_baseline:
        base = measured(_BASELINE, [str(args.data), str(args.baseline_epochs)])
        print(f"\nplain PyTorch (ImageFolder + DataLoader, frozen backbone eager fp32, linear head, SGD, "
              f"{args.baseline_epochs} epochs): {base['seconds']:.1f} s, val accuracy {base.get('val_accuracy', 0):.2%}, "
              f"peak RSS {base['rss_mb']:.0f} MB")
        print(f"ratios: first run {base['seconds'] / med(first, 'seconds'):.1f}x faster, "
              f"cold {base['seconds'] / med(cold, 'seconds'):.1f}x faster, "
              f"warm {base['seconds'] / med(warm, 'seconds'):.1f}x faster, "
              f"accuracy {cold[0]['val_accuracy'] - base.get('val_accuracy', 0):+.2%}")


if __name__ == "__main__":
    main()
