"""The checks of ``headstart inspect``, each a small pure function over hashes, probabilities or counts
(near-duplicates are found by :mod:`headstart.features.neighbours`).

Kept apart from the folder walk and the page so that each check can be tested
(and reused) on plain arrays, without images, a backbone or a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._io import file_digest

__all__ = [
    "KINDS",
    "TITLES",
    "IMBALANCE_RATIO",
    "FEW_IMAGES",
    "file_digests",
    "find_exact_duplicates",
    "out_of_fold_probabilities",
    "find_label_errors",
    "class_imbalance",
]

KINDS = ("unreadable", "exact_duplicate", "near_duplicate", "label_error", "class_imbalance")
# Here rather than with the page: the console's summary lines name the kinds too.
TITLES = {"unreadable": "Unreadable files", "exact_duplicate": "Exact duplicates",
          "near_duplicate": "Near-duplicates", "label_error": "Likely label errors",
          "class_imbalance": "Class imbalance"}
IMBALANCE_RATIO = 3.0  # largest / smallest class in a split
FEW_IMAGES = 10  # a class with fewer images than this in a split is barely learned or measured


def file_digests(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file's bytes."""

    # Reading is I/O bound, and hashlib releases the GIL on large buffers: threads overlap both.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(file_digest, paths))


def find_exact_duplicates(digests: Sequence[str]) -> list[list[int]]:
    """Groups of indices whose digests are equal (two or more each), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        groups.setdefault(d, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5,
                              seed: int = 0) -> tuple[np.ndarray, float]:
    """Each image's class probabilities from a linear head that never saw it; and the L2 strength C.

    C is chosen once, by the cross-validation of :func:`headstart.training.linear.fit_linear_head`
    (the lightweight workflow's head, which minimises scikit-learn's objective), then
    a standardised logistic regression is refitted per fold. Needs at least two
    images of every class.
    """
    # scikit-learn (and SciPy, behind the linear head) load here, not with the package:
    # the CLI imports it for its options' defaults.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from ..features.rows import Rows
    from ..training.linear import fit_linear_head

    # L-BFGS on a few thousand rows is matrix-vector products, which BLAS threads only slow
    # down: on 2 cores, 3,000 images took 1.1 s single-threaded and 4.5-16 s with 2 threads.
    with threadpool_limits(1):
        c = fit_linear_head(Rows.from_array(features, labels), None, num_classes, seed=seed).C
        smallest = int(np.bincount(labels, minlength=num_classes).min())
        splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
        return cross_val_predict(model, features, labels, cv=splitter, method="predict_proba"), c


def find_label_errors(proba: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, float]]:
    """Likely mislabelled images by confident learning (Northcutt, Jiang and Chuang, "Confident
    Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021).

    ``proba`` holds out-of-fold probabilities. Class ``j``'s threshold ``t_j`` is
    the mean probability of ``j`` among the images labelled ``j``: how confident
    the model is, on average, when it is right. An image is confidently of class
    ``j`` when ``p_j >= t_j``; when several classes pass, the most probable one
    counts (as in cleanlab's confident joint, so the given label competes too).
    An image is flagged when that class is not its label.

    Returns ``(index, suggested class, probability of the given label)``, the
    least self-confident first.
    """
    # A few lines of NumPy rather than the cleanlab package: this is all of it we need,
    # and cleanlab would bring a heavy dependency tree for it.
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.arange(proba.shape[1])
    thresholds = np.array([proba[labels == j, j].mean() if (labels == j).any() else np.inf for j in classes])
    confident = proba >= thresholds
    best = np.where(confident, proba, -1.0).argmax(axis=1)
    flagged = np.flatnonzero(confident.any(axis=1) & (best != labels))
    given = proba[flagged, labels[flagged]]
    order = np.argsort(given, kind="stable")
    return [(int(flagged[k]), int(best[flagged[k]]), float(given[k])) for k in order]


def class_imbalance(counts: dict[str, dict[str, int]], ratio: float = IMBALANCE_RATIO,
                    few: int = FEW_IMAGES) -> list[tuple[str, str, str]]:
    """``(split, class, why)`` for each class that the largest class of its split outnumbers
    ``ratio`` times or more, or that has fewer than ``few`` images there (splits without images
    are left alone)."""
    found = []
    for split, per_class in counts.items():
        if not any(per_class.values()):
            continue
        largest = max(per_class, key=per_class.get)
        n_max = per_class[largest]
        for name, n in per_class.items():
            why = []
            if n * ratio <= n_max:
                why.append(f"{largest} has {n_max} images, {name} {n}" + (f" ({n_max / n:.1f}x)" if n else ""))
            if n < few:
                why.append(f"{name} has {n} image(s), fewer than {few}")
            if why:
                found.append((split, name, f"{split}: {'; '.join(why)}"))
    return found
