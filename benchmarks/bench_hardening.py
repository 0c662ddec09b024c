"""The two scale cases of the second hardening pass, each in a fresh process, against a baseline
source tree measured in the same run (``--baseline-src``, e.g. a checkout of the commit before).

    python benchmarks/bench_hardening.py head [--classes 10000] [--iterations 20]
    python benchmarks/bench_hardening.py predict [--files 50000] [--model run|onnx]
    ... --baseline-src /path/to/old/src      # also measure that tree, and print the ratios

``head``: the lightweight head on 10,000 classes of one image each (the image and its mirror:
20,000 rows of 1,280 float16 features, EfficientNet-Lite0's size), no validation split, as
``headstart train`` fits it; the solver is capped at ``--iterations`` so that the old code's
time per iteration and peak memory can be measured without waiting for it to converge.

``predict``: ``headstart predict RUN FOLDER --output p.csv`` on ``--files`` tiny PNG files
(16 x 16, in 100 folders), with a tiny random-init backbone (timm's ``test_efficientnet``), so
that what is measured is headstart's own work per file: discovery, header checks, decoding,
batching and writing. Seconds (wall) and peak RSS of the whole command.

Run by hand; not a test. Files are generated in a temporary folder and removed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_HEAD = r"""
import json, resource, sys, time
import numpy as np
from headstart.features.rows import Rows
from headstart.training import linear
linear.MAX_ITER = int(sys.argv[2])
classes, dim = int(sys.argv[1]), 1280
rng = np.random.default_rng(0)
features = rng.standard_normal((2 * classes, dim), dtype=np.float32).astype(np.float16)
labels = np.concatenate([np.arange(classes), np.arange(classes)])
rows = Rows.from_array(features, labels)
iterations = []
kwargs = {"progress": lambda c, i, f: iterations.append(i)} if "progress" in linear.fit_linear_head.__code__.co_varnames else {}
start = time.perf_counter()
head = linear.fit_linear_head(rows, None, classes, **kwargs)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_accuracy": head.train.accuracy}))
"""


def run_head(src: str, classes: int, iterations: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _HEAD, str(classes), str(iterations)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": src}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_files(root: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "images"
    for i in range(count):
        sub = folder / f"{i % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(sub / f"{i:06d}.png")
    return folder


def make_model(root: Path, kind: str) -> Path:
    """A tiny random-init model trained for one epoch on 16 images: the run folder or its .onnx."""
    import timm
    import torch
    from safetensors.torch import save_file
    from PIL import Image

    weights = root / "tiny.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()},
              str(weights))
    data = root / "data"
    for name, color in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (data / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (40, 32), tuple(c + i for c in color)).save(data / name / f"{i}.png")
    run = root / "run"
    command = [sys.executable, "-m", "headstart", "-q", "train", str(data), "--out", str(run), "--backbone",
               "test_efficientnet", "--weights", str(weights), "--image-size", "32", "--epochs", "1",
               "--workers", "0", "--workflow", "standard"]
    subprocess.run(command, check=True)
    if kind == "onnx":
        subprocess.run([sys.executable, "-m", "headstart", "-q", "export", str(run)], check=True)
        return run / "model.onnx"
    return run


_PREDICT = r"""
import json, resource, sys, time
from headstart.cli import main
start = time.perf_counter()
status = main(sys.argv[1:])
print(json.dumps({"status": int(status), "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_predict(src: str, model: Path, images: Path, output: Path) -> dict:
    """The command in a fresh process (imports included in the wall time); its own peak RSS and its
    decoding workers' largest."""
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PREDICT, "-q", "predict", str(model), str(images), "--output",
                          str(output)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src},
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    result["rows"] = sum(1 for _ in output.open()) - 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("head", "predict"))
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--model", choices=("run", "onnx"), default="run")
    parser.add_argument("--baseline-src", help="another source tree (its src/ folder) to measure first")
    args = parser.parse_args()
    trees = ([("baseline", args.baseline_src)] if args.baseline_src else []) + [("this tree", str(HERE.parent / "src"))]
    results = {}
    if args.case == "head":
        for name, src in trees:
            results[name] = run_head(src, args.classes, args.iterations)
            print(f"{name}: {args.classes} classes, {args.iterations} solver iterations: "
                  f"{results[name]['seconds']:.1f} s, peak RSS {results[name]['peak_rss_mb']:.0f} MB", flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            images = make_files(root, args.files)
            model = make_model(root, args.model)
            print(f"{args.files} files and the model made in {time.perf_counter() - start:.0f} s", flush=True)
            for name, src in trees:
                results[name] = run_predict(src, model, images, root / "p.csv")
                r = results[name]
                print(f"{name}: predict on {args.files} files ({args.model}): {r['wall_seconds']:.1f} s wall "
                      f"({r['seconds']:.1f} s in the command), peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(decoding workers {r['workers_peak_rss_mb']:.0f} MB), {r['rows']} rows", flush=True)
    if len(results) == 2:
        old, new = results["baseline"], results["this tree"]
        print(f"ratio: {old['seconds'] / new['seconds']:.2f}x faster, peak RSS "
              f"{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}x the baseline's")


if __name__ == "__main__":
    main()
