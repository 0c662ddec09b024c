"""Does fine-tuning pay? Stage 1 (the lightweight head) against the same run fine-tuned, on held-out
test images, over several seeds.

    python benchmarks/bench_recipe.py ../shared/datasets/dtd10 --seeds 0 1 2
    python benchmarks/bench_recipe.py ../shared/datasets/dtd10 --recipe "--fine-tune-lr 3e-4"
    python benchmarks/bench_recipe.py ../shared/datasets/dtd10 --both "--image-size 320"

For each set and seed, two ``headstart train`` runs on the same split (``--test-fraction``):
``--fine-tune-epochs 0`` (the baseline, measured in the same run of this script) and
``--fine-tune-epochs N`` plus any ``--recipe`` options; ``--both`` options go to the two runs. Prints each pair's validation and test
accuracy, whether the guard kept the fine-tuning, the fine-tuned run's minutes, the share of the
fine-tuned weights in the blend kept with stage 1's, then the
median gain per set. Run by hand; not a test (minutes per run on a CPU).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(data: Path, out: Path, options: list[str]) -> tuple[dict, float]:
    """One ``headstart train`` in its own process; its metrics.json and wall seconds."""
    command = [sys.executable, "-m", "headstart", "train", str(data), "--out", str(out), "-q", *options]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed: {shlex.join(command)}\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text()), seconds


def pair(data: Path, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """The baseline and the fine-tuned run of one seed."""
    common = ["--test-fraction", str(args.test_fraction), "--seed", str(seed), "--workflow", "lightweight",
              *shlex.split(args.both)]
    base, _ = train(data, work / f"{data.name}-{seed}-base", [*common, "--fine-tune-epochs", "0"])
    tuned, seconds = train(data, work / f"{data.name}-{seed}-tuned",
                           [*common, "--fine-tune-epochs", str(args.epochs), *shlex.split(args.recipe)])
    fine = tuned["fine_tune"] or {}
    return {"set": data.name, "seed": seed, "val1": base["val"]["accuracy"],
            "val2": fine.get("val_accuracy", float("nan")), "kept": bool(fine.get("kept")),
            "share": fine.get("share"),
            "test1": base["test"]["accuracy"], "test2": tuned["test"]["accuracy"], "minutes": seconds / 60}


def _share(share: float | None) -> str:
    """The fine-tuned weights' share in the blend kept (1: fine-tuned alone)."""
    return "-" if share is None else f"{share:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--recipe", default="", help="more train options for the fine-tuned run")
    parser.add_argument("--both", default="", help="more train options for both runs (e.g. --image-size)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as temporary:
        work = args.work or Path(temporary)
        print(f"both: {args.both or '-'}; recipe: --fine-tune-epochs {args.epochs} {args.recipe}".rstrip())
        print(f"{'set':<24}{'seed':>5}{'val 1':>8}{'val 2':>8}{'kept':>6}{'test 1':>8}{'test 2':>8}"
              f"{'gain':>7}{'min':>6}{'blend':>7}")
        rows = []
        for data in args.data:
            for seed in args.seeds:
                row = pair(data, seed, args, work)
                rows.append(row)
                kept = "yes" if row["kept"] else "no"
                print(f"{row['set']:<24}{seed:>5}{row['val1']:>8.2%}{row['val2']:>8.2%}{kept:>6}"
                      f"{row['test1']:>8.2%}{row['test2']:>8.2%}{row['test2'] - row['test1']:>+7.2%}"
                      f"{row['minutes']:>6.1f}{_share(row['share']):>7}", flush=True)
        for data in args.data:
            mine = [r for r in rows if r["set"] == data.name]
            gains = [r["test2"] - r["test1"] for r in mine]
            print(f"{data.name}: median test gain {statistics.median(gains):+.2%} (min {min(gains):+.2%}, "
                  f"max {max(gains):+.2%}), kept {sum(r['kept'] for r in mine)}/{len(mine)}, "
                  f"median {statistics.median(r['minutes'] for r in mine):.1f} min a run")


if __name__ == "__main__":
    main()
