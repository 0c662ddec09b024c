"""Active learning: the photos ``headstart suggest`` picks against random picks, round by round.

    python benchmarks/bench_active.py ../shared/datasets --rounds 8 --seeds 3

On each data set, every photo's features are computed once with the default backbone through
the feature cache (cats_and_dogs_filtered: the 2,000 training photos are the pool, the 1,000
validation photos the test set; dtd10: a seeded stratified 70/30 split). Each seed starts from 5
labelled photos per class, drawn at random from the pool; then every round labels 50 more
photos of the pool, picked by

* **random**: uniformly among the unlabelled photos;
* **margin**: the 50 photos with the smallest margin between the two most probable classes
  (uncertainty alone);
* **suggest**: headstart's strategy (:func:`headstart.embed.select_batch`: uncertainty times
  distance to the photos picked before, on the normalized embeddings),

refits the lightweight head on what is labelled (:func:`headstart.training.linear.fit_linear_head`,
its L2 strength cross-validated as training chooses it without validation photos) and measures
accuracy on the test set. Prints the mean accuracy per round over the seeds and the area under
each curve (the mean accuracy over the rounds), with its ratio to random's. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from headstart._console import Console
from headstart.data.dataset import discover
from headstart.embed import select_batch, uncertainty
from headstart.features.cache import CacheLayout
from headstart.features.embeddings import normalized_embeddings
from headstart.features.pipeline import FeatureRequest, extract_features
from headstart.features.rows import Rows
from headstart.training.linear import fit_linear_head, linear_probabilities

STRATEGIES = ("random", "margin", "suggest")
START_PER_CLASS, ROUND = 5, 50


def features_of(paths: list[Path]) -> np.ndarray:
    extracted = extract_features(paths, FeatureRequest(), CacheLayout(), Console(1)).features
    out = extracted.to_array()
    extracted.close()
    return out


def load_set(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(pool features, pool labels, test features, test labels, classes)."""
    presplit = (root / name / "train").is_dir()  # its validation photos are the test set
    split = discover(root / name, val_fraction=0.0, test_fraction=0.0 if presplit else 0.3, seed=0)
    pool, test = split.train, split.val if presplit else split.test
    x = features_of([s.path for s in pool + test])
    y = np.array([s.label for s in pool + test])
    return x[:len(pool)], y[:len(pool)], x[len(pool):], y[len(pool):], len(split.classes)


def pick(strategy: str, proba: np.ndarray, unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions among the unlabelled rows (``proba`` and ``unit`` are theirs)."""
    n = min(ROUND, len(proba))
    if strategy == "random":
        return rng.choice(len(proba), n, replace=False)
    scores = uncertainty(proba)
    if strategy == "margin":
        return np.argsort(-scores, kind="stable")[:n]
    return select_batch(scores, unit, n)


def curve(strategy: str, data, rounds: int, seed: int) -> list[tuple[int, float]]:
    x, y, x_test, y_test, classes = data
    unit = normalized_embeddings(x)
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), START_PER_CLASS, replace=False)
                               for c in range(classes)])
    points = []
    for round_ in range(rounds + 1):
        head = fit_linear_head(Rows.from_array(x[labelled], y[labelled]), None, classes, seed=seed)
        accuracy = float(np.mean(linear_probabilities(head.weight, head.bias, x_test).argmax(axis=1) == y_test))
        points.append((len(labelled), accuracy))
        if round_ == rounds:
            break
        rest = np.setdiff1d(np.arange(len(y)), labelled)
        proba = linear_probabilities(head.weight, head.bias, x[rest])
        labelled = np.concatenate([labelled, rest[pick(strategy, proba, unit[rest], rng)]])
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, help="the folder holding cats_and_dogs_filtered and dtd10")
    parser.add_argument("--sets", nargs="+", default=["cats_and_dogs_filtered", "dtd10"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for name in args.sets:
        data = load_set(args.datasets, name)
        start = time.perf_counter()
        curves = {s: [curve(s, data, args.rounds, seed) for seed in range(args.seeds)] for s in STRATEGIES}
        results = {s: np.array([[a for _, a in points] for points in runs]) for s, runs in curves.items()}
        sizes = [n for n, _ in curves["random"][0]]
        print(f"\n{name}: pool {len(data[1])}, test {len(data[3])}, {data[4]} classes, "
              f"{args.seeds} seeds ({time.perf_counter() - start:.0f} s)")
        print("| labelled | " + " | ".join(STRATEGIES) + " |")
        print("|---|" + "---|" * len(STRATEGIES))
        for i, n in enumerate(sizes):
            print(f"| {n} | " + " | ".join(f"{results[s][:, i].mean():.2%} ± {results[s][:, i].std():.2%}"
                                           for s in STRATEGIES) + " |")
        area = {s: results[s].mean() for s in STRATEGIES}
        print("| area under the curve (mean accuracy) | " + " | ".join(f"{area[s]:.2%}" for s in STRATEGIES) + " |")
        print("| ratio to random | " + " | ".join(f"{area[s] / area['random']:.4f}" for s in STRATEGIES) + " |")
        wins = {s: int((results[s].mean(axis=0)[1:] >= results["random"].mean(axis=0)[1:]).sum()) for s in STRATEGIES}
        print(f"rounds where the mean is at least random's: {wins}", flush=True)


if __name__ == "__main__":
    main()
