"""The command line, in-process, on tiny generated images and a tiny random-init backbone."""

import csv
import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import ExitStatus

from conftest import make_image


@pytest.fixture
def trained(cli, tiny_data: Path, tiny_args, tmp_path: Path) -> Path:
    (tiny_data / "red" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "run"
    status, captured = cli("train", tiny_data, "--out", out, *tiny_args, "--val-fraction", "0.25",
                           "--test-fraction", "0.25")
    assert status == ExitStatus.SUCCESS, captured.stderr
    return out


def test_train_writes_a_complete_run_folder(trained: Path):
    names = {p.name for p in trained.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "history.csv", "split.csv",
            "skipped.csv", "predictions.csv", "report.html", "plots"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    # Written through temporary files, yet with the user's usual mode: a shared run stays readable.
    assert {stat.S_IMODE(p.stat().st_mode) for p in trained.rglob("*") if p.is_file()} == {0o666 & ~umask}
    config = json.loads((trained / "config.json").read_text())
    assert config["classes"] == ["blue", "red"]
    assert config["backbone"]["weights"].startswith("file:")
    assert set(config["versions"]) >= {"headstart", "torch", "timm"}
    assert config["preprocessing"]["input_size"] == [3, 32, 32]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) >= {"val", "test", "stage1"} and metrics["val"]["count"] == 6
    with open(trained / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [r["stage"] for r in history] == ["frozen", "frozen"]
    assert set(history[0]) == {"epoch", "stage", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                               "lr", "seconds"}
    with open(trained / "split.csv") as f:
        split = list(csv.DictReader(f))
    assert len(split) == 24 and {r["split"] for r in split} == {"train", "val", "test"}
    skipped = (trained / "skipped.csv").read_text()
    assert "broken.jpg" in skipped and "not an image" in skipped


def test_non_empty_out_is_refused_unless_overwrite(cli, trained: Path, tiny_data: Path, tiny_args):
    before = (trained / "model.safetensors").read_bytes()
    status, captured = cli("train", tiny_data, "--out", trained, *tiny_args)
    assert status == ExitStatus.USAGE
    assert "not empty" in captured.stderr and "--overwrite" in captured.stderr
    assert (trained / "model.safetensors").read_bytes() == before
    status, _ = cli("train", tiny_data, "--out", trained, *tiny_args, "--overwrite", "--seed", "5")
    assert status == ExitStatus.SUCCESS
    assert (trained / "model.safetensors").read_bytes() != before


def test_predict_writes_one_row_per_image(cli, trained: Path, tiny_data: Path, tmp_path: Path):
    (tiny_data / "blue" / "broken.png").write_bytes(b"")
    images = sorted(p for p in tiny_data.rglob("*") if p.suffix in (".png", ".jpg"))
    out = tmp_path / "preds.csv"
    status, captured = cli("predict", trained, tiny_data, "--output", out, "--top-k", "2")
    assert status == ExitStatus.SUCCESS, captured.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(images) == 26
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images)
    good = [r for r in rows if not r["error"]]
    assert len(good) == 24 and all(r["class"] in ("red", "blue") for r in good)
    assert all(r["class_2"] in ("red", "blue") and r["class_2"] != r["class"] for r in good)
    assert all(float(r["probability"]) >= float(r["probability_2"]) for r in good)
    assert "cannot read" in captured.stderr


def test_predict_json_and_terminal_table(cli, trained: Path, tiny_data: Path, tmp_path: Path):
    out = tmp_path / "preds.json"
    status, _ = cli("predict", trained, tiny_data / "red", "--output", out)
    assert status == ExitStatus.SUCCESS
    rows = json.loads(out.read_text())
    assert len(rows) == 13 and {"path", "class", "probability", "top_k", "error"} <= set(rows[0])
    status, captured = cli("-q", "predict", trained, tiny_data / "blue" / "blue_000.png")
    assert status == ExitStatus.SUCCESS
    assert captured.stdout.count("\n") == 1 and captured.stdout.startswith(str(tiny_data / "blue"))
    assert captured.stderr == ""


def test_predict_refuses_to_replace_an_output(cli, trained: Path, tiny_data: Path, tmp_path: Path):
    out = tmp_path / "mine.csv"
    out.write_text("precious")
    status, captured = cli("predict", trained, tiny_data, "--output", out)
    assert status == ExitStatus.USAGE and out.read_text() == "precious"


def test_evaluate_prints_and_writes_metrics(cli, trained: Path, tiny_data: Path, tmp_path: Path):
    out = tmp_path / "m.json"
    status, captured = cli("evaluate", trained, tiny_data, "--output", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    assert "confusion matrix" in captured.stdout and "precision" in captured.stdout
    metrics = json.loads(out.read_text())
    # The 12 training images are left out (tests/test_evaluate.py has the details).
    assert metrics["count"] == 12 and np.array(metrics["confusion_matrix"]).sum() == 12


@pytest.mark.parametrize("workflow", ["standard", "lightweight"])
def test_save_load_gives_the_trained_models_predictions_without_unpickling(tiny_data: Path, tiny_weights: Path,
                                                                          monkeypatch, tmp_path: Path, workflow):
    paths = sorted((tiny_data / "red").glob("*.png"))[:5]
    trained = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                        workflow=workflow, epochs=1, batch_size=8, workers=0, verbose=0,
                                        cache_dir=tmp_path / "cache").fit(tiny_data)
    expected = trained.predict_proba(paths)
    saved = trained.save(tmp_path / "run")

    def refuse(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    clf = headstart.load(saved, verbose=0)
    np.testing.assert_array_equal(expected, clf.predict_proba(paths))
    again = clf.save(tmp_path / "copy")
    np.testing.assert_array_equal(expected, headstart.load(again, verbose=0).predict_proba(paths))


@pytest.mark.parametrize("argv,status,message", [
    (["train", "{data}", "--epochs", "0"], ExitStatus.USAGE, "'epochs' must be an integer >= 1"),
    (["train", "{data}", "--augment", "huge"], ExitStatus.USAGE, "invalid choice"),
    (["train", "{data}", "--unfreeze-last", "some"], ExitStatus.USAGE, "number of blocks or 'all'"),
    (["train", "{data}/missing"], ExitStatus.DATA, "dataset folder not found"),
    (["train", "{data}", "--backbone", "resnet-18"], ExitStatus.BACKBONE, "Did you mean"),
    (["train", "{data}", "--backbone", "resnet18"], ExitStatus.BACKBONE, "--weights FILE"),
    (["train", "{data}", "--val-fraction", "0", "--fine-tune-epochs", "1"], ExitStatus.USAGE, "validation"),
    (["predict", "{data}", "{data}"], ExitStatus.MODEL, "not a headstart model folder"),
    (["frobnicate"], ExitStatus.USAGE, "invalid choice"),
])
def test_user_errors_are_one_line_with_a_status(cli, tiny_data: Path, tmp_path: Path, argv, status, message):
    argv = [a.format(data=tiny_data) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "out"), "--workers", "0", "--image-size", "32"]
    code, captured = cli(*argv)
    assert code == status, captured.stderr
    assert message in captured.stderr
    assert captured.stderr.splitlines()[-1].startswith("headstart: error: ")
    assert "Traceback" not in captured.stderr


def test_traceback_flag_reraises(cli, tiny_data: Path):
    with pytest.raises(headstart.DataError):
        cli("--traceback", "train", tiny_data / "missing")


def test_python_api_follows_scikit_learn_conventions(tiny_data: Path, tiny_weights: Path, tmp_path: Path):
    from conftest import TINY_BACKBONE

    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    epochs=1, batch_size=8, workers=0, verbose=0)
    with pytest.raises(headstart.NotFittedError):
        clf.predict([tiny_data / "red" / "red_000.png"])
    assert clf.get_params()["epochs"] == 1
    assert clf.set_params(epochs=2) is clf and clf.epochs == 2
    assert clf.fit(tiny_data) is clf
    assert clf.classes_ == ("blue", "red")
    broken = make_image(tmp_path / "x.png", (1, 1, 1))
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.warns(UserWarning, match="x.png: cannot read file"):
        proba = clf.predict_proba([tiny_data / "red" / "red_000.png", broken])
    assert proba.shape == (2, 2) and np.isclose(proba[0].sum(), 1) and np.isnan(proba[1]).all()
    with pytest.warns(UserWarning, match="1 of 2 image"):
        assert clf.predict([tiny_data / "red" / "red_000.png", broken])[1] is None
    assert "epochs=2" in repr(clf)


def test_option_defaults_are_the_configuration_defaults():
    import dataclasses

    from headstart.cli import build_parser
    from headstart.config import TrainingConfig

    args = vars(build_parser().parse_args(["train", "data"]))
    config = TrainingConfig()
    shared = [f.name for f in dataclasses.fields(TrainingConfig) if f.name in args]
    assert len(shared) >= 20
    assert {name: args[name] for name in shared} == {name: getattr(config, name) for name in shared}
    assert headstart.ImageClassifier().training_config() == config


def test_the_registry_is_what_the_parser_and_the_launcher_read(cli, monkeypatch):
    """Each command is named once (cli.registry): the parser offers exactly those, the launch options
    only on the data-parallel ones, and under torchrun the others are refused."""
    import argparse

    from headstart.cli import build_parser
    from headstart.cli.registry import COMMANDS

    group = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(group.choices) == list(COMMANDS)
    launchable = {name for name, parser in group.choices.items()
                  if any("--nproc" in a.option_strings for a in parser._actions)}
    assert launchable == {name for name, c in COMMANDS.items() if c.data_parallel} == {"train", "predict", "evaluate"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # as torchrun sets them
        monkeypatch.setenv(name, "0")
    status, captured = cli("cache", "info")
    assert status == ExitStatus.USAGE
    assert "cache runs in one process: run it without torchrun" in captured.stderr


def test_compare_escapes_a_run_name_that_would_start_a_spreadsheet_formula(cli, tiny_run: Path, tmp_path: Path,
                                                                          monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    hostile = "=cmd|' -C calc'!A0"
    shutil.copytree(tiny_run, tmp_path / hostile)
    status, captured = cli("compare", tiny_run, hostile, "--output", "cmp.csv")
    assert status == ExitStatus.SUCCESS, captured.stderr
    header = next(csv.reader(open(tmp_path / "cmp.csv")))
    assert header[-1] == "'" + hostile  # shown as text by a spreadsheet, not run as a formula


def test_a_saved_lightweight_model_predicts_what_its_run_recorded(tiny_data: Path, tiny_weights: Path, tmp_path: Path):
    """The run's predictions.csv (features from the exported engine, fp32) and the loaded model's
    predict_proba agree: reduced precision is never the default when predicting. (Not refitted:
    the validation rows are then the saved model's own.)"""
    clf = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                    workflow="lightweight", workers=0, verbose=0, cache_dir=tmp_path / "cache",
                                    refit=False)
    run = clf.fit(tiny_data).save(tmp_path / "run")
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    loaded = headstart.load(run, verbose=0)
    proba = loaded.predict_proba([tiny_data / r["path"] for r in rows])
    recorded = np.array([[float(r[f"p_{c}"]) for c in loaded.classes_] for r in rows])
    np.testing.assert_allclose(proba, recorded, atol=2e-6)  # bf16 was 1e-5 off on this model, fp32 4e-7


@pytest.mark.parametrize("command", ["train", "backbones"])
def test_weights_holding_nan_are_refused_in_one_line(cli, tiny_data: Path, tiny_weights: Path, tmp_path: Path,
                                                     command):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    broken = tmp_path / "nan.safetensors"
    save_file(state, str(broken))
    backbone = ["--backbone", "test_efficientnet", "--weights", broken] if command == "train" else \
        ["--backbone", f"test_efficientnet={broken}"]
    status, captured = cli(command, tiny_data, *backbone, "--image-size", "32", "--out", tmp_path / "out")
    assert status == ExitStatus.MODEL, captured.stderr
    assert captured.stderr.endswith(f"headstart: error: weights file {broken} holds NaN or infinite values "
                                    f"(tensor {name}): it is damaged\n") and "Traceback" not in captured.stderr


def test_a_weights_file_that_would_unpickle_code_is_refused_in_one_line(cli, tiny_data: Path, tmp_path: Path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": pickle.loads(pickle.dumps(Path("x")))}, evil)
    status, captured = cli("train", tiny_data, "--backbone", "test_efficientnet", "--weights", evil,
                           "--image-size", "32", "--out", tmp_path / "out")
    assert status == ExitStatus.BACKBONE, captured.stderr
    errors = [line for line in captured.stderr.splitlines() if line.startswith("headstart: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"headstart: error: cannot read weights file {evil}: ")
    assert captured.stderr.endswith(errors[0] + "\n")  # nothing after the one line


def test_top_k_on_the_terminal_is_one_tab_separated_cell_per_class_and_probability(cli, tiny_run: Path,
                                                                                  tiny_data: Path):
    status, captured = cli("predict", tiny_run, tiny_data / "red", "--top-k", "2")
    assert status == ExitStatus.SUCCESS, captured.stderr
    for line in captured.stdout.splitlines():
        path, first, p1, second, p2 = line.split("\t")
        assert {first, second} == {"blue", "red"} and float(p1) >= float(p2) and path.endswith(".png")
