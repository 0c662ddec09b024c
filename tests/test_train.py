"""The seed's key details: what freezing and fine-tuning may and may not change."""

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from headstart.backbone.freeze import freeze, unfreeze
from headstart.backbone.head import ClassifierNet, Head
from headstart.backbone.pretrained import create_backbone
from headstart.config import BackboneRequest, HeadSpec, TrainingConfig
from headstart.training.plan import fine_tune_rate
from headstart.training.results import EpochStats
from headstart.training.recipe import WARMUP_FRACTION, optimisation
from headstart.training.stages import fine_tune_improved, guard_verdict, likely_cause

from headstart.errors import ExitStatus

from conftest import TINY_BACKBONE, make_folder, make_image


def tiny_net() -> ClassifierNet:
    torch.manual_seed(0)
    backbone, spec, pre = create_backbone(BackboneRequest(TINY_BACKBONE), pretrained=False)
    return ClassifierNet(backbone, Head(spec.num_features, HeadSpec(num_classes=3)), pre)


def batch_norm_stats(net: ClassifierNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.backbone.state_dict().items() if "running" in k or "num_batches" in k}


def one_step(net: ClassifierNet) -> None:
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(net(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_frozen_step_changes_the_head_only():
    net = tiny_net()
    freeze(net.backbone)
    before = copy.deepcopy(net.state_dict())
    one_step(net)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}
    assert all(p.grad is None for p in net.backbone.parameters())


def test_backbone_batchnorm_stays_in_inference_mode_while_fine_tuning():
    net = tiny_net()
    unfreeze(net.backbone)
    stats = batch_norm_stats(net)
    weights = {k: v.clone() for k, v in net.backbone.state_dict().items() if k.endswith("conv_stem.weight")}
    net.train()
    assert net.head.training
    assert not any(m.training for m in net.backbone.modules())
    one_step(net)
    assert all(torch.equal(v, batch_norm_stats(net)[k]) for k, v in stats.items())
    assert not all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in weights.items())


def test_head_pools_feature_maps_and_accepts_pooled_features():
    head = Head(8, HeadSpec(num_classes=2, dropout=0.0)).eval()
    maps = torch.randn(3, 8, 4, 4)
    assert torch.allclose(head(maps), head(maps.mean(dim=(2, 3))))


def test_fine_tune_is_kept_only_when_validation_improves():
    before = EpochStats(loss=0.20, accuracy=0.95, count=100)
    assert fine_tune_improved(before, EpochStats(0.15, 0.96, 100))
    assert not fine_tune_improved(before, EpochStats(0.30, 0.96, 100))  # one photo more, loss up: chance
    assert fine_tune_improved(EpochStats(0.50, 0.80, 100), EpochStats(0.60, 0.95, 100))  # beyond the noise
    assert fine_tune_improved(before, EpochStats(0.10, 0.95, 100))
    assert fine_tune_improved(before, EpochStats(0.10, 0.94, 100))  # one photo fewer is chance too: the loss decides
    assert not fine_tune_improved(before, EpochStats(0.10, 0.85, 100))  # ten fewer: beyond the noise, whatever the loss
    assert not fine_tune_improved(before, EpochStats(0.199, 0.94, 100))
    assert not fine_tune_improved(before, EpochStats(0.20, 0.95, 100))
    assert not fine_tune_improved(before, EpochStats(0.199, 0.96, 100))  # both within the noise


def test_the_guard_weighs_calibrated_losses_when_both_have_them():
    # Fine-tuned with label smoothing, a model is less sure than the head fitted exactly: its raw
    # loss is higher at equal accuracy, its loss once calibrated (as it will be used) lower.
    before = EpochStats(loss=0.32, accuracy=0.9125, count=240, calibrated_loss=0.30)
    after = EpochStats(loss=0.44, accuracy=0.9125, count=240, calibrated_loss=0.27)
    kept, reason = guard_verdict(before, after)
    assert kept and reason.startswith("improved validation calibrated loss at equal accuracy")
    assert not guard_verdict(before, EpochStats(0.44, 0.9125, 240))[0]  # raw losses when one lacks it
    assert not guard_verdict(before, EpochStats(0.25, 0.9125, 240, calibrated_loss=0.31))[0]


def test_the_calibrated_loss_is_the_loss_at_the_fitted_temperature():
    from headstart.trust.calibration import apply_temperature, calibrated_loss, fit_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 2.0 * np.eye(3)[labels]
    soft = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)  # far too unsure
    nll = lambda p: float(-np.log(p[np.arange(200), labels]).mean())  # noqa: E731
    best = apply_temperature(soft, fit_temperature(soft, labels))
    assert calibrated_loss(soft, labels) == pytest.approx(nll(best), rel=1e-6)
    assert calibrated_loss(soft, labels) < nll(soft)
    assert calibrated_loss(soft[:10], labels[:10]) is None  # too few images to fit a temperature on


def fine_tune_rows(*val_losses: float) -> list[dict]:
    return [{"stage": "frozen", "val_loss": 9.0}] + [{"stage": "fine-tune", "val_loss": x} for x in val_losses]


@pytest.mark.parametrize("losses,cause", [
    ((0.31, 0.29, 0.30), "too low"),  # within 5% of stage 1's 0.30: nothing moved
    ((0.45, 0.50, 0.48), "too high"),
    ((0.45, 0.40, 0.36), "recovering"),
    ((0.25, 0.22, 0.35), "overfitted"),
    ((0.25, 0.22, 0.20), "did not rise"),
])
def test_likely_cause_of_a_refused_fine_tune_reads_the_validation_losses(losses, cause):
    found = likely_cause(EpochStats(0.30, 0.90, 100), fine_tune_rows(*losses))
    assert cause in found and "0.3000 -> " in found


def test_fine_tuning_warms_up_then_decays_per_step_and_rates_blocks_by_depth():
    net = tiny_net()
    unfreeze(net.backbone)
    config = TrainingConfig(fine_tune_lr=1e-3, layer_decay=0.5)
    steps = optimisation(net, config, "fine-tune", (2, 10), torch.float32)
    rates = []
    for _ in range(20):
        rates.append(steps.lr)
        steps.optimizer.step()  # no gradients: nothing moves, but the schedule may step after it
        steps.schedule.step()
    warm = round(20 * WARMUP_FRACTION)
    assert rates[0] == pytest.approx(1e-5) and rates[warm] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:warm], rates[1:warm + 1]))
    assert all(a > b for a, b in zip(rates[warm:-1], rates[warm + 1:]))
    groups = steps.optimizer.param_groups
    assert [g["initial_lr"] for g in groups[:3]] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in net.parameters() if p.requires_grad)
    head = optimisation(net, TrainingConfig(lr=1e-2), "frozen", (2, 10), torch.float32)
    assert head.lr == pytest.approx(1e-2) and len(head.optimizer.param_groups) == 1


def test_fine_tuning_rate_is_the_one_asked_for_or_grows_with_the_training_photos():
    assert TrainingConfig().fine_tune_lr is None
    assert [fine_tune_rate(TrainingConfig(), n) for n in (0, 999, 1000, 50_000)] == [1e-4, 1e-4, 2e-4, 2e-4]
    assert fine_tune_rate(TrainingConfig(fine_tune_lr=3e-5), 50_000) == 3e-5


def test_weight_decay_is_what_adamw_applies_in_both_stages():
    net = tiny_net()
    config = TrainingConfig(weight_decay=0.05, fine_tune_lr=1e-4, layer_decay=0.5)
    for stage in ("frozen", "fine-tune"):
        groups = optimisation(net, config, stage, (1, 4), torch.float32).optimizer.param_groups
        assert {g["weight_decay"] for g in groups} == {0.05}, stage


def test_label_smoothing_softens_single_label_targets_and_never_multi_label_ones():
    from types import SimpleNamespace

    from headstart.training.loop import loss_function

    config = TrainingConfig(label_smoothing=0.2)
    single = SimpleNamespace(config=config, multi_label=False)
    multi = SimpleNamespace(config=config, multi_label=True)
    assert loss_function(single, training=True).label_smoothing == 0.2
    assert loss_function(single, training=False).label_smoothing == 0.0  # validation loss is the plain one
    criterion = loss_function(multi, training=True)
    logits, target = torch.tensor([[4.0, -4.0]]), torch.tensor([[1.0, 0.0]])
    assert isinstance(criterion, nn.BCEWithLogitsLoss)
    assert criterion(logits, target) == pytest.approx(nn.BCEWithLogitsLoss()(logits, target))  # unsmoothed


def test_training_crops_are_smaller_than_the_input_the_model_is_evaluated_on():
    from PIL import Image

    from headstart.config import Preprocessing
    from headstart.data.loader import eval_transform, train_size, train_transform

    pre = Preprocessing((3, 224, 224), "bicubic", (0.5,) * 3, (0.5,) * 3, 0.875)
    image = Image.new("RGB", (300, 260), (90, 140, 30))
    assert train_size(pre) == (176, 176)  # FixRes: trained smaller than evaluated, for two-thirds the cost
    assert tuple(train_transform(pre, "light")(image).shape) == (3, 176, 176)
    assert tuple(eval_transform(pre)(image).shape) == tuple(train_transform(pre, "none")(image).shape) == (3, 224, 224)


def test_strong_augmentation_crops_harder_and_adds_rotation_and_colour():
    from torchvision.transforms import v2 as T

    from headstart.data.loader import train_transform

    _, _, pre = create_backbone(BackboneRequest(TINY_BACKBONE), pretrained=False)
    light, strong = train_transform(pre, "light").transforms, train_transform(pre, "strong").transforms
    crop = {name: next(t for t in steps if isinstance(t, T.RandomResizedCrop)) for name, steps in
            (("light", light), ("strong", strong))}
    assert crop["strong"].scale[0] < crop["light"].scale[0]
    assert any(isinstance(t, T.RandomRotation) for t in strong) and any(isinstance(t, T.ColorJitter) for t in strong)
    assert not any(isinstance(t, (T.RandomRotation, T.ColorJitter)) for t in light)


def test_a_kept_fine_tune_is_refitted_on_train_and_val_and_reports_the_guarded_models_validation(
        cli, tiny_args, tmp_path: Path, monkeypatch):
    from headstart.training import stages

    data = make_folder(tmp_path / "data", per_class=30)
    monkeypatch.setattr(stages, "guard_verdict", lambda before, after: (True, "kept by the test"))
    args = [*tiny_args, "--fine-tune-epochs", "2", "--no-blend", "--patience", "0", "--val-fraction", "0.4",
            "--test-fraction", "0.2"]  # enough validation images to calibrate on
    runs = {name: tmp_path / name for name in ("refit", "guarded")}
    assert cli("train", data, "--out", runs["refit"], *args)[0] == ExitStatus.SUCCESS  # the default
    assert cli("train", data, "--out", runs["guarded"], *args, "--no-refit")[0] == ExitStatus.SUCCESS
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    refit, guarded = metrics["refit"], metrics["guarded"]
    assert refit["fine_tune"]["refit_epochs"] == refit["fine_tune"]["best_epoch"]
    assert guarded["fine_tune"].get("refit_epochs") is None
    rows = list(csv.DictReader(open(runs["refit"] / "history.csv")))
    assert [r["stage"] for r in rows].count("refit") == refit["fine_tune"]["refit_epochs"]
    assert all(r["val_loss"] == "nan" for r in rows if r["stage"] == "refit")  # nothing is held out from it
    # The validation figures, the temperature and the prediction sets are the guarded model's,
    # whose validation photos were held out: the same in both runs.
    assert refit["val"] == guarded["val"]
    assert refit["calibration"]["temperature"] == guarded["calibration"]["temperature"]
    assert refit["fine_tune"]["val_accuracy"] == refit["val"]["accuracy"]
    configs = {name: json.loads((run / "config.json").read_text()) for name, run in runs.items()}
    assert configs["refit"]["head"]["conformal_scores"] == configs["guarded"]["head"]["conformal_scores"]
    # The rate these few training photos called for is saved as used; run.json keeps what was asked.
    assert configs["refit"]["training"]["fine_tune_lr"] == 1e-4
    assert json.loads((runs["refit"] / "run.json").read_text())["params"]["fine_tune_lr"] is None
    # ...while the weights are another model's, trained on the validation photos too.
    from safetensors.numpy import load_file

    weights = {name: load_file(str(run / "model.safetensors")) for name, run in runs.items()}
    assert any(not np.array_equal(weights["refit"][k], weights["guarded"][k]) for k in weights["refit"])
    assert "refitted on train + val" in (runs["refit"] / "report.html").read_text()
    # Evaluating the run's own folder leaves the validation photos out: the refitted model trained on them.
    status, captured = cli("evaluate", runs["refit"], data)
    assert status == ExitStatus.SUCCESS, captured.stderr
    counts = refit["counts"]
    left_out = sum(counts["train"].values()) + sum(counts["val"].values())
    assert f"{left_out} image(s) the model was trained on" in captured.stderr


def test_refit_gives_the_lightweight_head_the_validation_photos_once_they_have_chosen(cli, tiny_weights,
                                                                                      tmp_path: Path):
    from safetensors.numpy import load_file

    data = tmp_path / "data"
    for name, colour in (("plum", (120, 90, 110)), ("mauve", (110, 90, 120))):  # close: validation photos teach
        for i in range(30):
            make_image(data / name / f"{name}_{i:03d}.png", colour, seed=i)
    args = ["--backbone", TINY_BACKBONE, "--weights", str(tiny_weights), "--image-size", "32", "--workers", "0",
            "--workflow", "lightweight", "--val-fraction", "0.4", "--test-fraction", "0.2"]
    runs = {name: tmp_path / name for name in ("refit", "plain")}
    assert cli("train", data, "--out", runs["refit"], *args)[0] == ExitStatus.SUCCESS  # the default
    assert cli("train", data, "--out", runs["plain"], *args, "--no-refit")[0] == ExitStatus.SUCCESS
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    assert metrics["refit"]["head"]["refitted"] and not metrics["plain"]["head"]["refitted"]
    assert metrics["refit"]["head"]["C"] == metrics["plain"]["head"]["C"]  # chosen on validation, then refitted
    assert metrics["refit"]["val"] == metrics["plain"]["val"]  # the validation figures: the head before its refit
    weights = {name: load_file(str(run / "model.safetensors"))["head.fc.weight"] for name, run in runs.items()}
    assert not np.allclose(weights["refit"], weights["plain"])
    status, captured = cli("evaluate", runs["refit"], data)
    assert status == ExitStatus.SUCCESS, captured.stderr
    counts = metrics["refit"]["counts"]
    assert f"{sum(counts['train'].values()) + sum(counts['val'].values())} image(s) the model was trained on" \
        in captured.stderr



def test_flip_features_fits_the_head_on_the_mirror_images_too(cli, tiny_weights, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=10)
    args = ["--backbone", TINY_BACKBONE, "--weights", str(tiny_weights), "--image-size", "32", "--workers", "0",
            "--workflow", "lightweight", "--val-fraction", "0.2", "--cache-dir", tmp_path / "cache"]
    status, plain = cli("train", data, "--out", tmp_path / "plain", *args)
    assert status == ExitStatus.SUCCESS, plain.stderr
    status, flipped = cli("train", data, "--out", tmp_path / "flipped", *args, "--flip-features")
    assert status == ExitStatus.SUCCESS, flipped.stderr
    assert "head fitted on the features of 16 training rows in" in plain.stderr
    assert "head fitted on the features of 32 training rows (their mirror images included)" in flipped.stderr
