"""headstart's lightweight multi-label head against scikit-learn's standard baseline, on the same features.

    python benchmarks/bench_multilabel.py ../shared/datasets --mosaics 600

Builds a multi-label set of real photos (seeded 2x2 mosaics, :mod:`mosaics`), reads its
label file with headstart (a seeded 60/20/20 train/val/test split), computes every
image's features once with the default backbone, then fits on the training features:

* headstart: one-vs-rest logistic heads (L2 strength per class chosen on validation by
  average precision, threshold per class tuned on validation for the best F1);
* the baseline: ``OneVsRestClassifier(LogisticRegression(max_iter=1000))`` with a 0.5
  threshold, fitted on the training features, and once more on training + validation
  (it has no use for a validation set, so it may as well learn from it).

Prints mAP, macro and micro F1 on the test images and the fitting times, with the
ratios. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosaics import make_mosaics  # noqa: E402

from headstart._console import Console  # noqa: E402
from headstart.data.labels import read_label_file  # noqa: E402
from headstart.evaluate import multilabel_metrics  # noqa: E402
from headstart.features.cache import CacheLayout  # noqa: E402
from headstart.features.pipeline import FeatureRequest, extract_features  # noqa: E402
from headstart.features.rows import Rows  # noqa: E402
from headstart.training.ovr import fit_ovr_head, sigmoid_probabilities  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", type=Path, help="../shared/datasets")
    parser.add_argument("--mosaics", type=int, default=600)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-multilabel-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        labels = make_mosaics(args.datasets, tmp / "set", args.mosaics, args.size, args.seed)
        split = read_label_file(labels, val_fraction=0.2, test_fraction=0.2, seed=args.seed)
        print(f"{args.mosaics} mosaics of {args.size} px, {len(split.classes)} classes, {split.sizes()}, "
              f"built in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        extraction = extract_features([s.path for s in split.samples()], FeatureRequest(), CacheLayout(tmp / "cache"),
                                      Console(0))
        features = extraction.features.to_array()
        extraction.features.close()
        print(f"features: {features.shape[1]} per image, {time.perf_counter() - start:.1f} s "
              f"({extraction.features.engine})")
        parts = _parts(split, features)
        results = {"headstart (per-class C and threshold on val)": _headstart(parts, split.classes),
                   "baseline OvR LogisticRegression, 0.5, train": _baseline(parts, split.classes, ("train",)),
                   "baseline OvR LogisticRegression, 0.5, train+val": _baseline(parts, split.classes,
                                                                                 ("train", "val"))}
    print(f"\n{'method':<52} {'mAP':>7} {'macroF1':>8} {'microF1':>8} {'fit s':>7}")
    for name, (m, seconds) in results.items():
        print(f"{name:<52} {m['mean_ap']:7.4f} {m['macro_f1']:8.4f} {m['micro_f1']:8.4f} {seconds:7.2f}")
    ours, base = results[next(iter(results))][0], results[list(results)[1]][0]
    print(f"\nheadstart / baseline (train): mAP x{ours['mean_ap'] / base['mean_ap']:.3f}, "
          f"macro F1 x{ours['macro_f1'] / base['macro_f1']:.3f}")


def _parts(split, features: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    bounds = np.cumsum([0, len(split.train), len(split.val), len(split.test)])
    return {name: (features[bounds[i]:bounds[i + 1]], split.targets(samples))
            for i, (name, samples) in enumerate(split.splits().items())}


def _headstart(parts: dict, classes) -> tuple[dict, float]:
    start = time.perf_counter()
    head = fit_ovr_head(Rows.from_array(*parts["train"]), Rows.from_array(*parts["val"]))
    seconds = time.perf_counter() - start
    x, y = parts["test"]
    proba = sigmoid_probabilities(Rows.from_array(x, y), head.weight, head.bias)
    return multilabel_metrics(y, proba, classes, head.thresholds), seconds


def _baseline(parts: dict, classes, fit_on: tuple[str, ...]) -> tuple[dict, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    x = np.concatenate([parts[name][0] for name in fit_on])
    y = np.concatenate([parts[name][1] for name in fit_on])
    start = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(x, y)
    seconds = time.perf_counter() - start
    x_test, y_test = parts["test"]
    return multilabel_metrics(y_test, model.predict_proba(x_test), classes, [0.5] * len(classes)), seconds


if __name__ == "__main__":
    main()
