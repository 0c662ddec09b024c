"""Backbones compared on cached features: ``headstart backbones`` and ``train --backbone auto``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import TINY_BACKBONE, make_folder, random_weights, shared_dataset
from headstart import ImageClassifier
from headstart._console import Console
from headstart.config import TrainingConfig
from headstart.data.dataset import discover
from headstart.errors import ExitStatus, UsageError
from headstart.features.cache import CacheLayout
from headstart.runfolder import BACKBONES_COLUMNS, BACKBONES_FILE, CHECKPOINT_FILE, backbones_csv
from headstart.selection import Candidate, Entry, Survey, choose, select_backbone

SECOND_BACKBONE = "test_efficientnet_gn"  # timm's other tiny EfficientNet, with GroupNorm


@pytest.fixture(scope="session")
def second_weights(tmp_path_factory) -> Path:
    return random_weights(SECOND_BACKBONE, tmp_path_factory.mktemp("weights") / "tiny_gn.safetensors", seed=1)


@pytest.fixture
def candidates(tiny_weights: Path, second_weights: Path) -> list[str]:
    return [f"{SECOND_BACKBONE}={second_weights}", f"{TINY_BACKBONE}={tiny_weights}"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", per_class=12, classes=("red", "blue", "green"))


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def best_of(rows: list[dict], val_images: int) -> dict:
    """What the choice must be: the fastest of the backbones whose validation accuracy is within the
    noise of the highest on ``val_images`` (1.96 standard errors of a difference, Agresti-Caffo)."""
    top = max(rows, key=lambda r: (float(r["val_accuracy"]), -float(r["val_loss"])))
    p = (float(top["val_accuracy"]) * val_images + 1) / (val_images + 2)
    noise = 1.96 * (2 * p * (1 - p) / val_images) ** 0.5
    return max((r for r in rows if float(top["val_accuracy"]) - float(r["val_accuracy"]) <= noise),
               key=lambda r: (float(r["images_per_second"]), float(r["val_accuracy"])))


def compare(cli, data: Path, out: Path, cache: Path, candidates: list[str], *extra: str):
    flags = [a for c in candidates for a in ("--backbone", c)]
    return cli("backbones", data, *flags, "--image-size", "32", "--workers", "0", "--cache-dir", cache,
               "--out", out, *extra)


def test_backbones_writes_a_table_a_csv_and_a_page_with_the_best_marked(cli, data: Path, tmp_path: Path,
                                                                        candidates: list[str]):
    out = tmp_path / "cmp"
    status, captured = compare(cli, data, out, tmp_path / "cache", candidates)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = rows_of(out / BACKBONES_FILE)
    assert list(rows[0]) == list(BACKBONES_COLUMNS)
    assert [r["backbone"] for r in rows] == [SECOND_BACKBONE, TINY_BACKBONE]  # in the order given
    assert len({r["val_loss"] for r in rows}) == 2  # two different heads: the choice means something
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert chosen == [best_of(rows, 6)]
    for row in rows:
        assert row["input_size"] == "32" and int(row["features_computed"]) == 36  # 30 train + 6 val
        assert float(row["images_per_second"]) > 0 and int(row["parameters"]) > 10_000
        assert 0 < float(row["weights_mb"]) < 5 and row["weights"].endswith(".safetensors")
    table = captured.stdout.splitlines()
    marked = [line for line in table if line.startswith("* ")]
    assert len(marked) == 1 and marked[0].split()[1].startswith(chosen[0]["backbone"] + "=")
    assert f"best: {chosen[0]['backbone']}=" in captured.stdout
    page = (out / "backbones.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and (out / "backbones.png").stat().st_size > 5_000
    assert SECOND_BACKBONE in page and TINY_BACKBONE in page and "&#9733;" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_a_second_comparison_reads_every_feature_from_the_cache(cli, data: Path, tmp_path: Path,
                                                                candidates: list[str]):
    cache = tmp_path / "cache"
    assert compare(cli, data, tmp_path / "first", cache, candidates)[0] == ExitStatus.SUCCESS
    status, captured = compare(cli, data, tmp_path / "second", cache, candidates)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = rows_of(tmp_path / "second" / BACKBONES_FILE)
    assert [int(r["features_computed"]) for r in rows] == [0, 0]
    assert captured.stdout.count("all cached") == 2
    assert float(rows[0]["images_per_second"]) > 0  # still timed: on a sample, recomputed
    first = rows_of(tmp_path / "first" / BACKBONES_FILE)
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in first]  # same features, same heads


def test_train_backbone_auto_trains_the_best_and_records_the_comparison(cli, data: Path, tmp_path: Path,
                                                                       candidates: list[str]):
    out = tmp_path / "run"
    flags = [a for c in candidates for a in ("--candidate", c)]
    status, captured = cli("train", data, "--backbone", "auto", *flags, "--image-size", "32", "--workers", "0",
                           "--cache-dir", tmp_path / "cache", "--out", out)
    assert status == ExitStatus.SUCCESS, captured.stderr
    rows = rows_of(out / BACKBONES_FILE)
    best = best_of(rows, 6)
    assert [r for r in rows if r["chosen"] == "True"] == [best]
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"]["name"] == best["backbone"]
    assert config["backbone"]["weights"].startswith(f"file:{best['weights']} ")
    assert json.loads((out / "run.json").read_text())["params"]["backbone"] == "auto"  # a resume compares again
    assert f"chose {best['backbone']}=" in captured.stderr
    report = (out / "report.html").read_text()
    section = report[report.index("<h2>Backbones compared</h2>"):report.index("<h2>Training")]
    assert section.count("<tr>") == len(rows) + 1 and f"&#9733;</td><td>{best['backbone']}</td>" in section


def test_the_python_api_takes_backbone_auto(data: Path, tmp_path: Path, candidates: list[str]):
    clf = ImageClassifier(backbone="auto", candidates=candidates, image_size=32, workers=0,
                          cache_dir=tmp_path / "cache", verbose=0).fit(data)
    best = best_of([{k: str(v) for k, v in row.items()} for row in clf.backbones_], 6)
    assert clf.config_.backbone.name == best["backbone"] and clf.config_.training.backbone == best["backbone"]
    assert clf.get_params()["backbone"] == "auto"  # the estimator's parameters stay as given
    assert (clf.save(tmp_path / "run") / BACKBONES_FILE).is_file()


def test_a_resumed_auto_run_keeps_the_backbone_it_chose(data: Path, tmp_path: Path, candidates: list[str]):
    run = tmp_path / "run"
    run.mkdir()
    entry = _entry(Candidate(TINY_BACKBONE, candidates[1].split("=", 1)[1]), 0.5, 1.0, 100.0)
    entry.chosen = True  # not the best a new comparison would find: the record wins
    (run / BACKBONES_FILE).write_text(backbones_csv([entry.row()]))
    (run / CHECKPOINT_FILE).write_bytes(b"")
    split = discover(data)
    config = TrainingConfig(backbone="auto", candidates=tuple(candidates), image_size=32)
    resolved, rows = select_backbone(split, config, CacheLayout(tmp_path / "cache"), Console(0), run)
    assert (resolved.backbone, resolved.weights, resolved.candidates) == (TINY_BACKBONE, entry.candidate.weights, ())
    assert [r["backbone"] for r in rows] == [TINY_BACKBONE]


def _entry(candidate: Candidate, accuracy: float, loss: float, speed: float) -> Entry:
    return Entry(candidate, candidate.name, "none", 224, 1_000_000, 4.0, accuracy, loss, None, speed, 0, 0.0, 0.0)


def test_the_choice_is_the_best_accuracy_within_the_time_budget():
    fast, slow, tied = (_entry(Candidate("fast"), 0.90, 0.30, 200.0), _entry(Candidate("slow"), 0.95, 0.20, 20.0),
                        _entry(Candidate("tied"), 0.90, 0.25, 100.0))
    survey = Survey([fast, slow, tied], Path("."), 2, "", 64)
    assert choose(survey) is slow and "the best validation accuracy (95.00%" in survey.reason
    survey.time_budget = 20.0  # seconds per 1,000 images: slow takes 50
    assert choose(survey) is tied  # as accurate as fast, with a lower validation loss
    assert not slow.within_budget and [e.chosen for e in survey.entries] == [False, False, True]
    assert "slow scores 95.00% but takes 50.0 s" in survey.reason
    survey.time_budget = 1.0
    with pytest.raises(UsageError, match="no backbone fits --time-budget 1 s per 1,000 images: the fastest, "
                                         "fast, takes 5.0 s"):
        choose(survey)


@pytest.mark.parametrize("arguments, status, message", [
    (["--backbone", "no_such_net"], ExitStatus.BACKBONE, "--backbone no_such_net: unknown backbone 'no_such_net'"),
    (["--backbone", "efficientnet_lite0=missing.safetensors"], ExitStatus.BACKBONE,
     "--backbone efficientnet_lite0=missing.safetensors: weights file missing.safetensors not found"),
    (["--backbone", "=x"], ExitStatus.USAGE, "expected NAME or NAME=WEIGHTS_FILE"),
    (["--backbone", "efficientnet_lite0", "--backbone", "efficientnet_lite0"], ExitStatus.USAGE,
     "--backbone efficientnet_lite0 is given twice"),
    (["--time-budget", "-1"], ExitStatus.USAGE, "'time_budget' must be a positive number of seconds per 1,000"),
    (["--val-fraction", "0"], ExitStatus.USAGE, "comparing backbones needs validation images"),
])
def test_bad_candidates_and_budgets_are_one_line_errors(cli, data: Path, tmp_path: Path, arguments, status,
                                                        message):
    code, captured = cli("backbones", data, *arguments, "--out", tmp_path / "out", "--cache-dir", tmp_path / "c")
    assert code == status
    assert captured.stderr.startswith("headstart: error: ") and captured.stderr.count("\n") == 1
    assert message in captured.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_train_refuses_candidates_without_backbone_auto(cli, data: Path, tmp_path: Path):
    status, captured = cli("train", data, "--candidate", "efficientnet_lite1", "--out", tmp_path / "run")
    assert status == ExitStatus.USAGE
    assert "'candidates' must be empty unless backbone is 'auto'" in captured.stderr


def test_backbones_refuses_a_non_empty_out_and_one_inside_the_data(cli, data: Path, tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    status, captured = cli("backbones", data, "--out", tmp_path / "full")
    assert status == ExitStatus.USAGE and "is not empty" in captured.stderr
    status, captured = cli("backbones", data, "--out", data / "cmp")
    assert status == ExitStatus.USAGE and "inside DATA" in captured.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


# -- on real photos ----------------------------------------------------------------------------

def test_embedded_lite0_and_lite1_compared_on_real_photos(cli, tmp_path: Path):
    data = shared_dataset("hymenoptera_data")
    cache = tmp_path / "cache"
    flags = ["--backbone", "efficientnet_lite0", "--backbone", "efficientnet_lite1", "--cache-dir", cache]
    status, captured = cli("backbones", data, *flags, "--out", tmp_path / "first")
    assert status == ExitStatus.SUCCESS, captured.stderr
    lite0, lite1 = rows_of(tmp_path / "first" / BACKBONES_FILE)
    assert (lite0["input_size"], lite1["input_size"]) == ("224", "240")  # each at its own pretrained size
    assert 3.0e6 < int(lite0["parameters"]) < int(lite1["parameters"]) < 5.0e6
    assert 10 < float(lite0["weights_mb"]) < float(lite1["weights_mb"]) < 25
    for row in (lite0, lite1):
        assert float(row["val_accuracy"]) > 0.85  # ants vs bees, 153 validation photos
        assert int(row["features_computed"]) == 398 and float(row["images_per_second"]) > 0
    assert [r for r in (lite0, lite1) if r["chosen"] == "True"] == [best_of([lite0, lite1], 153)]
    status, captured = cli("backbones", data, *flags, "--out", tmp_path / "again")
    assert status == ExitStatus.SUCCESS, captured.stderr
    again = rows_of(tmp_path / "again" / BACKBONES_FILE)
    assert [int(r["features_computed"]) for r in again] == [0, 0]
    assert [r["val_accuracy"] for r in again] == [lite0["val_accuracy"], lite1["val_accuracy"]]


def test_scores_within_the_noise_of_few_validation_images_go_to_the_fastest_backbone():
    fast, slow = _entry(Candidate("fast"), 0.90, 0.30, 200.0), _entry(Candidate("slow"), 0.92, 0.25, 20.0)
    survey = Survey([fast, slow], Path("."), 2, "", 64, val_images=64)  # 2 points on 64 images: 1 photo
    assert choose(survey) is fast
    assert "fast: the fastest (200.0 img/s) of the backbones within the noise" in survey.reason
    assert "92.00%" in survey.reason and "64 images cannot tell apart" in survey.reason
    survey.val_images = 20_000  # the same 2 points on many images are a real difference
    assert choose(survey) is slow and "the best validation accuracy (92.00%" in survey.reason


def test_speed_is_the_fastest_of_three_timings_so_a_moments_load_cannot_rank_a_backbone(monkeypatch, tmp_path: Path):
    from types import SimpleNamespace

    from headstart.selection import survey
    from headstart.training.plan import feature_request

    seconds = iter([4.0, 1.0, 2.0])  # the first timing ran while another process took the cores
    requests = []

    def timed(sample, request, cache, console):
        requests.append(request)
        return SimpleNamespace(features=SimpleNamespace(computed=len(sample), seconds=next(seconds), close=lambda: None))

    monkeypatch.setattr(survey, "extract_features", timed)
    sample = [tmp_path / f"{i}.png" for i in range(128)]
    speed = survey._images_per_second(sample, feature_request(TrainingConfig()), CacheLayout(tmp_path / "cache"))
    assert speed == 128.0 and len(requests) == survey.TIMINGS == 3 and all(r.recompute for r in requests)
