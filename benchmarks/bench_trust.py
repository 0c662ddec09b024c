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
run is fitted on the others, and four scores (:func:`unknown_scores`) are compared by how well
they separate the held-out class's photos (unknown) from the known test photos (AUROC); the
share of unknown photos ``reject="auto"`` (the maximum probability) rejects is printed too. The
features are computed by the PyTorch backbone again (not read from the cache). Run by hand; not
a test.
"""

from __future__ import annotations

import argparse
import sys
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


def pooled_features(clf: headstart.ImageClassifier, paths: list[Path]) -> np.ndarray:
    """The backbone's pooled features of ``paths`` (the head's input), one row per readable image."""
    import torch

    from headstart.data.images import predict_in_batches

    net = clf.net_.float().eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net.forward_features(torch.from_numpy(batch)).numpy()

    rows = [f for _, f, _ in predict_in_batches(paths, clf.preprocessing, run, 32) if f is not None]
    if len(rows) != len(paths):
        sys.exit(f"{len(paths) - len(rows)} image(s) could not be decoded: the rows would not match their labels")
    return np.stack(rows)


def unknown_scores(clf: headstart.ImageClassifier, train: np.ndarray, train_labels: np.ndarray,
                   features: np.ndarray) -> dict[str, np.ndarray]:
    """How much each row of ``features`` looks known (higher: more), by four scores: the maximum
    calibrated probability, the negative energy ``T * logsumexp(logits / T)`` (Liu et al., 2020),
    the negative Mahalanobis distance to the nearest class mean with a shared covariance (Lee et
    al., 2018) and the cosine similarity to the 10th nearest training image (Sun et al., 2022)."""
    weight = clf.net_.head.fc.weight.detach().numpy()
    bias = clf.net_.head.fc.bias.detach().numpy()
    scaled = (features @ weight.T + bias) / clf.head_.temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    means = np.stack([train[train_labels == k].mean(axis=0) for k in range(len(clf.classes_))])
    centred = train - means[train_labels]
    precision = np.linalg.pinv(centred.T @ centred / len(train) + 1e-6 * np.eye(train.shape[1]))
    gaps = features[:, None, :] - means[None]
    mahalanobis = np.einsum("nkc,cd,nkd->nk", gaps, precision, gaps).min(axis=1)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    known = train / np.linalg.norm(train, axis=1, keepdims=True)
    knn = np.sort(unit @ known.T, axis=1)[:, -10]
    return {"max probability": np.exp(top[:, 0] - log_norm), "energy": clf.head_.temperature * log_norm,
            "Mahalanobis": -mahalanobis, "10-NN cosine": knn}


def unknown_aurocs(data: Path, held_out: str, cache: Path | None) -> tuple[dict[str, float], float]:
    """Hold ``held_out`` out, fit on the other classes: each score's AUROC between the known test
    photos and the held-out class's photos, and the share of the latter ``reject="auto"`` rejects."""
    from sklearn.metrics import roc_auc_score

    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    known = [(path, c) for c in classes if c != held_out for path in image_files(data / c)]
    clf = headstart.ImageClassifier(workflow="lightweight", val_fraction=0.2, test_fraction=0.2, cache_dir=cache,
                                    verbose=0).fit([p for p, _ in known], [c for _, c in known])
    split = clf.split_
    train = pooled_features(clf, [s.path for s in split.train])
    tested = pooled_features(clf, [s.path for s in split.test])
    unknown = pooled_features(clf, image_files(data / held_out))
    scores = {name: (a, b) for (name, a), b in zip(
        unknown_scores(clf, train, split.targets(split.train), tested).items(),
        unknown_scores(clf, train, split.targets(split.train), unknown).values())}
    truth = np.r_[np.ones(len(tested)), np.zeros(len(unknown))]
    aurocs = {name: float(roc_auc_score(truth, np.r_[a, b])) for name, (a, b) in scores.items()}
    return aurocs, float((scores["max probability"][1] < clf.head_.reject_threshold).mean())


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
    if args.held_out:
        print("\n| data set | held out | max probability | energy | Mahalanobis | 10-NN cosine | auto rejects |")
        print("|---|---|---|---|---|---|---|")
    for name in args.sets:
        classes = sorted(p.name for p in (args.datasets / name).iterdir() if p.is_dir())
        for held_out in classes[: args.held_out] if len(classes) >= 3 else []:
            aurocs, share = unknown_aurocs(args.datasets / name, held_out, args.cache_dir)
            print(f"| {name} | {held_out} | " + " | ".join(f"{v:.3f}" for v in aurocs.values()) + f" | {share:.1%} |",
                  flush=True)


if __name__ == "__main__":
    main()
