"""Metrics: scikit-learn's numbers, and the calibration error on cases with known answers."""

import numpy as np
import pytest

from headstart.metrics import classification_metrics, expected_calibration_error, format_metrics


def test_binary_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y = np.array([0, 0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.6, 0.8, 0.7, 0.4, 0.2])
    proba = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, proba, ["cat", "dog"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p1))
    assert m["log_loss"] == pytest.approx(log_loss(y, proba))
    assert "top_1_accuracy" not in m and "ROC-AUC" in format_metrics(m)


def test_multiclass_metrics_have_top_k_and_no_auc():
    y = np.array([0, 1, 2, 3])
    proba = np.array([[.7, .1, .1, .1], [.5, .4, .05, .05], [.1, .1, .2, .6], [.1, .1, .1, .7]])
    m = classification_metrics(y, proba, ["a", "b", "c", "d"])
    assert m["accuracy"] == 0.5 and m["top_3_accuracy"] == 1.0
    assert "roc_auc" not in m and "top 3 accuracy 100.00%" in format_metrics(m)


def test_expected_calibration_error():
    y = np.array([0, 0, 0, 0])
    assert expected_calibration_error(y, np.array([[1.0, 0.0]] * 4)) == 0.0  # sure and right
    # 90% confident, right half of the time: off by 0.4
    overconfident = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.4)
