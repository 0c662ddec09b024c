"""The demo behind `make demo`: a real labelled image set, no download, the user's own path.

scikit-learn ships 1,797 handwritten digits (8x8 grey scans). They are written
out as an image folder, one subfolder per digit, exactly the layout a user
brings; then `headstart train` and `headstart predict` run on it with the
embedded EfficientNet-Lite0 backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from headstart.cli import main


def write_digits(folder: Path, size: int = 64) -> int:
    """Write every digit as a PNG under ``folder/<digit>/``; returns how many."""
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        # The scans hold 0..16 ink levels: dark ink on white paper, like a photo of a digit.
        grey = (255 - pixels * (255 / 16)).astype(np.uint8)
        target = folder / str(label) / f"{i:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey, "L").resize((size, size), Image.BILINEAR).save(target)
    return len(digits.target)


def demo(workdir: Path) -> int:
    data, run = workdir / "digits", workdir / "run"
    if not data.is_dir():
        print(f"writing scikit-learn's handwritten digits to {data} ...", file=sys.stderr)
        write_digits(data)
    # 128 px is plenty for 8x8 scans and four times cheaper than the backbone's 224.
    status = main(["train", str(data), "--out", str(run), "--overwrite", "--image-size", "128",
                   "--val-fraction", "0.15", "--test-fraction", "0.15"])
    if status:
        return int(status)
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"\ntest accuracy on {metrics['test']['count']} held-out digits: {metrics['test']['accuracy']:.2%}")
    examples = sorted(data.glob("*/000*.png"))[:3]
    print("\npredicting a few of them:", file=sys.stderr)
    status = main(["predict", str(run), *map(str, examples), "--top-k", "2"])
    print(f"\nsee what it learned: open {run / 'report.html'} in a browser")
    headstart = command_name()
    print(f"next: {headstart} predict {run} YOUR_IMAGES...   |   {headstart} evaluate {run} {data}")
    return int(status)


def command_name() -> str:
    """How to type the headstart command in this shell: `make demo` runs in .venv without
    activating it, so a bare `headstart` would not be found there."""
    script = Path(sys.executable).parent / "headstart"
    on_path = shutil.which("headstart")
    if not script.exists() or (on_path and Path(on_path).samefile(script)):
        return "headstart"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    sys.exit(demo(parser.parse_args().workdir))
