"""The lightweight multi-label head (headstart.training.ovr) and the multi-label metrics."""

import numpy as np
import pytest

from headstart.metrics import best_f1_thresholds, multilabel_metrics
from headstart.features.rows import Rows
from headstart.training.ovr import _BinaryObjective, fit_ovr_head, sigmoid_probabilities


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32) * rng.uniform(0.5, 3, 12).astype(np.float32) + 1
    w = rng.normal(size=(3, 12))
    y = ((x @ w.T + rng.normal(size=(n, 3)) * 2) > np.array([0, 3, -3])).astype(np.float32)
    return x, y


def test_each_head_is_scikit_learns_logistic_regression_at_the_same_strength():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _data(400)
    objective = _BinaryObjective(Rows.from_array(x, y), None)
    weight, bias = objective.unscale(objective.minimize(0.1, None))
    scaled = StandardScaler().fit_transform(x)
    for k in range(3):
        reference = LogisticRegression(C=0.1, tol=1e-8, max_iter=5000).fit(scaled, y[:, k])
        ours = 1 / (1 + np.exp(-(x @ weight[k] + bias[k])))
        assert np.abs(ours - reference.predict_proba(scaled)[:, 1]).max() < 2e-3


def test_strength_and_thresholds_come_from_validation_and_the_refit_uses_every_row():
    x, y = _data(600)
    train, val = Rows.from_array(x[:400], y[:400]), Rows.from_array(x[400:], y[400:])
    head = fit_ovr_head(train, val)
    assert head.val_proba.shape == (200, 3) and len(head.thresholds) == 3
    # The figures reported for validation are the pre-refit heads': the refit has seen those rows.
    refitted = sigmoid_probabilities(val, head.weight, head.bias)
    assert not np.allclose(refitted, head.val_proba)
    assert head.val.mean_ap == pytest.approx(multilabel_metrics(y[400:], head.val_proba, "abc", [0.5] * 3)["mean_ap"])
    assert np.all((head.thresholds > 0) & (head.thresholds < 1)) and head.val.mean_ap > 0.8
    without_val = fit_ovr_head(train, None)  # cross-validated instead
    assert without_val.val is None and 0 < without_val.C and len(without_val.thresholds) == 3


def test_balanced_weights_raise_a_rare_class_probabilities():
    x, y = _data(400, seed=1)
    rows = Rows.from_array(x, y)
    plain, balanced = (_BinaryObjective(rows, w) for w in (None, "balanced"))
    p_plain = sigmoid_probabilities(rows, *plain.unscale(plain.minimize(1.0, None)))
    p_balanced = sigmoid_probabilities(rows, *balanced.unscale(balanced.minimize(1.0, None)))
    rare = int(np.argmin(y.sum(axis=0)))
    assert p_balanced[:, rare].mean() > p_plain[:, rare].mean() + 0.05


def test_multilabel_metrics_on_a_known_case():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    proba = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.3, 0.8]])
    m = multilabel_metrics(y, proba, ["a", "b"], [0.5, 0.5])
    assert m["mean_ap"] == 1.0 and m["subset_accuracy"] == 1.0 and m["hamming_loss"] == 0.0
    assert m["samples_f1"] == 1.0  # the image with no label and none predicted counts as right
    m = multilabel_metrics(y, proba, ["a", "b"], [0.95, 0.5])  # class a never predicted now
    assert m["per_class"]["a"]["recall"] == 0 and m["hamming_loss"] == pytest.approx(2 / 8)
    assert m["micro_f1"] == pytest.approx(2 / 3) and m["macro_f1"] == pytest.approx(0.5)
    thresholds = best_f1_thresholds(y, proba)
    assert 0.3 < thresholds[0] <= 0.6 and 0.4 < thresholds[1] <= 0.7
    assert best_f1_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.2))[0] == 0.5  # nothing to tune on
