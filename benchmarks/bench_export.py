"""Each export format's runtime against ONNX Runtime, on one trained run, in the same process.

    headstart train ../shared/datasets/cats_and_dogs_filtered --out runs/cats   # Lite0, the default
    python benchmarks/bench_export.py runs/cats [--images 256] [--int8]

For every format that exports and runs on this machine (ONNX, OpenVINO, TFLite; Core ML is
exported and checked but cannot run here), it exports the run into a scratch folder (timed),
reads the parity the export recorded in export.json (top-1 agreement, largest probability
difference, accuracy of both), the file's size, and measures images per second of the network
alone (batches of 32 already-decoded validation images, median of 5) and of predict_proba
end to end (decoding included). With --int8, each format's int8 copy too. Run by hand; not a test.
"""

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from headstart._console import Console
from headstart.cli import main
from headstart.export import format_named
from headstart.export.files import read_export_record
from headstart.model import load
from headstart.record import split_images

FORMATS = ("onnx", "openvino", "tflite", "coreml")


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def export(run: Path, out: Path, name: str, int8: bool) -> tuple[float, int]:
    """Export ``run`` as ``out`` (and its int8 copy); the seconds it took and the exit status."""
    argv = ["-q", "export", str(run), "--format", name, "--output", str(out)] + (["--int8"] if int8 else [])
    start = time.perf_counter()
    status = main(argv, Console(verbosity=0, out=io.StringIO()))
    return time.perf_counter() - start, int(status)


def network_speed(model, batch: np.ndarray, repeats: int = 5) -> float:
    model.run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


def end_to_end_speed(model, images: list[Path]) -> float:
    start = time.perf_counter()
    model.predict_proba(images)
    return len(images) / (time.perf_counter() - start)


def measure(path: Path, name: str, images: list[Path]) -> str:
    """One line: the file's size, its recorded check, and its speed where it runs here."""
    fmt = format_named(name)
    entry = read_export_record(path.parent)[path.name]
    line = f"  {path.name:<18} {sum(size_mb(p) for p in fmt.files(path)):6.1f} MB"
    accuracy = entry["accuracy"]
    if entry["precision"] == "int8":
        line += f"  accuracy fp32 {accuracy['fp32']:.2%} -> int8 {accuracy['int8']:.2%}"
    elif entry["measured"]:
        line += (f"  top-1 agreement {entry['top1_agreement']:.2%}, max diff {entry['max_difference']:.1e}, "
                 f"accuracy {accuracy['trained']:.2%} -> {accuracy['exported']:.2%}")
    else:
        return line + f"  {entry['not_measured']}"
    model = fmt.opener(path)
    batch = np.stack([model.pixels(p) for p in images[:32]])
    return line + (f"  network {network_speed(model, batch):6.1f} img/s, end to end "
                   f"{end_to_end_speed(model, images):6.1f} img/s")


def main_bench(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=256, help="validation images to time on")
    parser.add_argument("--int8", action="store_true", help="also each format's int8 copy")
    parser.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    args = parser.parse_args(argv)
    clf = load(args.run, verbose=0)
    images = [p for p, _ in split_images(args.run, "val", clf.classes_)][: args.images]
    print(f"{args.run}: {clf.config_.backbone.name}, {len(images)} validation image(s), {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.formats:
            fmt = format_named(name)
            out = Path(scratch) / f"model{fmt.suffix}"
            seconds, status = export(args.run, out, name, args.int8 and fmt.quantizer is not None)
            if status != 0:
                print(f"{name}: export failed (exit {status}): is its extra installed?")
                continue
            print(f"{name}: exported in {seconds:.1f} s")
            paths = [out] + ([out.with_suffix(".int8" + fmt.suffix)] if args.int8 and fmt.quantizer else [])
            for path in paths:
                print(measure(path, name, images))


if __name__ == "__main__":
    main_bench(sys.argv[1:])
