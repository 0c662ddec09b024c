"""Predictions a user can trust, measured: calibration, prediction sets and rejection on real photos.

    python benchmarks/bench_trust.py ../shared/datasets --seeds 100 --held-out 2

For each data set (dtd10 and cats_and_dogs_filtered by default) one lightweight run is fitted
with ``calibrate=False`` (features from the feature cache after the first time), which gives the
raw probabilities of its validation and test images. Then, over ``--seeds`` random halvings of
those images (one half calibrates, the other is measured, as a deployment meets new photos):

* calibration: the temperature fitted on the first half (:mod:`headstart.trust.calibration`),
  and the expected calibration error (top-label, 15 bins) of the second without and with it;
* prediction sets: the coverage and mean set size on the second half at 80, 90 and 95% asked,
  calibrated on the first (:mod:`headstart.trust.conformal`);
* rejection: the share of the second half's known images that ``reject="auto"``, set on the first,
  keeps (it aims at 95%).

With ``--held-out K`` (data sets of three classes or more), K classes are held out in turn: a
run is fitted on the others, and the maximum probability's AUROC separates the held-out class's
photos (unknown) from the known test photos; the share of unknown photos ``auto`` rejects is
printed too. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import headstart
from headstart.data.images import image_files
from headstart.metrics import expected_calibration_error
from headstart.trust import (apply_temperature, conformity_scores, fit_temperature, keeping_threshold, known_scores,
                             prediction_sets, rejected)

COVERAGES = (0.8, 0.9, 0.95)


def fit_raw(data: Path | tuple[list[Path], list[str]], cache: Path | None) -> headstart.ImageClassifier:
    """A lightweight run without calibration on ``data`` (a folder, or paths and labels), 20% val and 20% test."""
    clf = headstart.ImageClassifier(workflow="lightweight", calibrate=False, val_fraction=0.2, test_fraction=0.2,
                                    cache_dir=cache, verbose=0)
    return clf.fit(*data) if isinstance(data, tuple) else clf.fit(data)


def held_out_probabilities(clf: headstart.ImageClassifier) -> tuple[np.ndarray, np.ndarray]:
    """The raw probabilities and class indices of the run's validation and test images, pooled."""
    split = clf.split_
    proba = np.concatenate([clf.predictions_[name] for name in ("val", "test") if name in clf.predictions_])
    labels = np.concatenate([split.targets(samples) for name, samples in (("val", split.val), ("test", split.test))
                             if name in clf.predictions_])
    readable = ~np.isnan(proba).any(axis=1)
    return proba[readable], labels[readable]


def over_halvings(proba: np.ndarray, labels: np.ndarray, seeds: int) -> dict[str, float]:
    """Calibration, prediction sets and rejection, each fitted on one half and measured on the other."""
    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(labels))
        a, b = order[: len(order) // 2], order[len(order) // 2:]
        temperature = fit_temperature(proba[a], labels[a])
        calibrated = apply_temperature(proba, temperature)
        measured = {"temperature": temperature, "ece_before": expected_calibration_error(labels[b], proba[b]),
                    "ece_after": expected_calibration_error(labels[b], calibrated[b])}
        scores = conformity_scores(calibrated[a], labels[a])
        for coverage in COVERAGES:
            sets = prediction_sets(calibrated[b], scores, coverage)
            measured[f"coverage_{coverage}"] = sets[np.arange(len(b)), labels[b]].mean()
            measured[f"size_{coverage}"] = sets.sum(axis=1).mean()
        threshold = keeping_threshold(known_scores(calibrated[a]))
        measured["kept"] = 1 - rejected(calibrated[b], threshold).mean()
        for key, value in measured.items():
            rows.setdefault(key, []).append(float(value))
    return {key: float(np.mean(values)) for key, values in rows.items()}


def unknown_auroc(data: Path, held_out: str, cache: Path | None) -> tuple[float, float]:
    """Hold ``held_out`` out, fit on the other classes: the maximum probability's AUROC between the
    known test photos and the held-out class's photos, and the share of the latter auto rejects."""
    from sklearn.metrics import roc_auc_score

    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    known = [(path, c) for c in classes if c != held_out for path in image_files(data / c)]
    clf = headstart.ImageClassifier(workflow="lightweight", val_fraction=0.2, test_fraction=0.2, cache_dir=cache,
                                    verbose=0).fit([p for p, _ in known], [c for _, c in known])
    unknown = clf.predict_proba(image_files(data / held_out))
    known_scores_, unknown_scores = known_scores(clf.predictions_["test"]), known_scores(unknown)
    truth = np.r_[np.ones(len(known_scores_)), np.zeros(len(unknown_scores))]
    auroc = roc_auc_score(truth, np.r_[known_scores_, unknown_scores])
    return float(auroc), float(rejected(unknown, clf.head_.reject_threshold).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, help="the shared datasets folder")
    parser.add_argument("--sets", nargs="+", default=["dtd10", "cats_and_dogs_filtered"])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=0, metavar="K")
    parser.add_argument("--cache-dir", type=Path, help="the feature cache (default: the user's)")
    args = parser.parse_args()
    print("| data set | images measured | T | ECE before | ECE after | "
          + " | ".join(f"coverage / size at {c:.0%}" for c in COVERAGES) + " | auto keeps |")
    print("|---|---|---|---|---|" + "---|" * len(COVERAGES) + "---|")
    for name in args.sets:
        start = time.perf_counter()
        proba, labels = held_out_probabilities(fit_raw(args.datasets / name, args.cache_dir))
        m = over_halvings(proba, labels, args.seeds)
        sets = " | ".join(f"{m[f'coverage_{c}']:.1%} / {m[f'size_{c}']:.2f}" for c in COVERAGES)
        print(f"| {name} | {len(labels) - len(labels) // 2} (of {len(labels)}) | {m['temperature']:.3f} | "
              f"{m['ece_before']:.4f} | {m['ece_after']:.4f} | {sets} | {m['kept']:.1%} |"
              f"  <!-- {time.perf_counter() - start:.0f} s -->", flush=True)
    for name in args.sets:
        classes = sorted(p.name for p in (args.datasets / name).iterdir() if p.is_dir())
        for held_out in classes[: args.held_out] if len(classes) >= 3 else []:
            auroc, share = unknown_auroc(args.datasets / name, held_out, args.cache_dir)
            print(f"{name}, {held_out} held out: max-probability AUROC {auroc:.3f}, "
                  f"auto rejects {share:.1%} of its photos", flush=True)


if __name__ == "__main__":
    main()
