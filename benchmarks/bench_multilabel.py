"""headstart's lightweight multi-label head against scikit-learn's standard baseline, on the same features.

    python benchmarks/bench_multilabel.py ../shared/datasets --mosaics 600 --splits 5

Builds a multi-label set of real photos (seeded 2x2 mosaics, :mod:`mosaics`), computes every
image's features once with the default backbone, then for each of ``--splits`` seeded
60/20/20 train/val/test splits (headstart's own multi-label split) fits on the training
features:

* headstart: one-vs-rest logistic heads, the L2 strength chosen on validation by mean
  average precision, each class's threshold tuned on validation for the best F1, then the
  heads refitted on train + val (:func:`headstart.training.ovr.fit_ovr_head`);
* the baseline: ``OneVsRestClassifier(LogisticRegression(max_iter=1000))`` on the training
  features, with a 0.5 threshold (``max_iter`` raised from 100 so that it converges).

Prints mAP, macro and micro F1 on each split's test images, their means and the fitting
times, with the ratios. Several splits, because one test set of 120 mosaics moves F1 by a
point either way.

Then whether headstart's heads need calibrating: each class's expected calibration error on the
test images (binary, 15 bins, averaged over the classes) as the heads give them, and after a
temperature per class fitted on the validation probabilities of the heads fitted on the training
rows alone (the figures :func:`fit_ovr_head` keeps honest), as single-label models are
calibrated. Run by hand; not a test.
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
from headstart.metrics import multilabel_metrics  # noqa: E402
from headstart.features.cache import CacheLayout  # noqa: E402
from headstart.features.pipeline import FeatureRequest, extract_features  # noqa: E402
from headstart.features.rows import Rows  # noqa: E402
from headstart.training.ovr import fit_ovr_head, sigmoid_probabilities  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", type=Path, help="../shared/datasets")
    parser.add_argument("--mosaics", type=int, default=600)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-multilabel-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        labels = make_mosaics(args.datasets, tmp / "set", args.mosaics, args.size, args.seed)
        every = read_label_file(labels, val_fraction=0.0)
        print(f"{args.mosaics} mosaics of {args.size} px, {len(every.classes)} classes, "
              f"built in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        extraction = extract_features([s.path for s in every.train], FeatureRequest(), CacheLayout(tmp / "cache"),
                                      Console(0))
        features = dict(zip((s.path for s in every.train), extraction.features.to_array()))
        extraction.features.close()
        print(f"features: {len(features)} images, {time.perf_counter() - start:.1f} s "
              f"({extraction.features.engine})")
        results: dict[str, list] = {"headstart": [], "baseline": []}
        calibration = []
        for seed in range(args.seed, args.seed + args.splits):
            split = read_label_file(labels, val_fraction=0.2, test_fraction=0.2, seed=seed)
            parts = {name: (np.stack([features[s.path] for s in samples]), split.targets(samples))
                     for name, samples in split.splits().items()}
            calibration.append(_calibration(parts))
            print(f"split {seed}: per-class ECE {calibration[-1][0]:.4f} as fitted, {calibration[-1][1]:.4f} "
                  "with a temperature per class")
            for name, method in (("headstart", _headstart), ("baseline", _baseline)):
                metrics, seconds = method(parts, split.classes)
                results[name].append((metrics["mean_ap"], metrics["macro_f1"], metrics["micro_f1"], seconds))
                print(f"split {seed} ({split.sizes()}): {name:<9} mAP {metrics['mean_ap']:.4f}  "
                      f"macro F1 {metrics['macro_f1']:.4f}  micro F1 {metrics['micro_f1']:.4f}  fit {seconds:.2f} s")
    print(f"\nmean over {args.splits} splits        mAP  macro F1  micro F1   fit s")
    means = {name: np.mean(rows, axis=0) for name, rows in results.items()}
    labels_of = {"headstart": "headstart OvR heads (C, thresholds on val)",
                 "baseline": "OvR LogisticRegression(), threshold 0.5"}
    for name, m in means.items():
        print(f"{labels_of[name]:<44} {m[0]:.4f}  {m[1]:.4f}    {m[2]:.4f}  {m[3]:6.2f}")
    ours, base = means["headstart"], means["baseline"]
    print(f"headstart / baseline: mAP x{ours[0] / base[0]:.3f}, macro F1 x{ours[1] / base[1]:.3f}, "
          f"fit time x{ours[3] / base[3]:.2f}")
    before, after = np.mean(calibration, axis=0)
    print(f"per-class ECE on test, mean over splits: {before:.4f} as fitted, {after:.4f} with a temperature "
          f"per class (x{after / before:.2f})")


def _calibration(parts: dict) -> tuple[float, float]:
    """Mean per-class ECE on the test rows: the heads' sigmoids, then each divided in logit by the
    temperature that fits that class's validation probabilities (of the heads before their refit)."""
    from headstart.metrics import expected_calibration_error
    from headstart.trust import apply_temperature, fit_temperature

    head = fit_ovr_head(Rows.from_array(*parts["train"]), Rows.from_array(*parts["val"]))
    x, y = parts["test"]
    proba = sigmoid_probabilities(Rows.from_array(x, y), head.weight, head.bias)
    before, after = [], []
    for k in range(proba.shape[1]):  # a sigmoid is a softmax over (0, logit): two columns
        pair, val_pair = (np.stack([1 - p, p], axis=1) for p in (proba[:, k], head.val_proba[:, k]))
        temperature = fit_temperature(val_pair, parts["val"][1][:, k].astype(int))
        before.append(expected_calibration_error(y[:, k].astype(int), pair))
        after.append(expected_calibration_error(y[:, k].astype(int), apply_temperature(pair, temperature)))
    return float(np.mean(before)), float(np.mean(after))


def _headstart(parts: dict, classes) -> tuple[dict, float]:
    start = time.perf_counter()
    head = fit_ovr_head(Rows.from_array(*parts["train"]), Rows.from_array(*parts["val"]))
    seconds = time.perf_counter() - start
    x, y = parts["test"]
    proba = sigmoid_probabilities(Rows.from_array(x, y), head.weight, head.bias)
    return multilabel_metrics(y, proba, classes, head.thresholds), seconds


def _baseline(parts: dict, classes) -> tuple[dict, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    x, y = parts["train"]
    start = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(x, y)
    seconds = time.perf_counter() - start
    x_test, y_test = parts["test"]
    return multilabel_metrics(y_test, model.predict_proba(x_test), classes, [0.5] * len(classes)), seconds


if __name__ == "__main__":
    main()
