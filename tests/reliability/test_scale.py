"""Many classes, many files: said plainly, shown progressing, memory bounded. The full-size
cases (10,000 classes, 50,000 files) are timed by ``benchmarks/bench_hardening.py``."""

import tracemalloc
from pathlib import Path

import numpy as np

import headstart
from headstart._console import Console
from headstart.features.rows import Rows
from headstart.training import lightweight, linear

from conftest import make_image


def one_image_classes(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        make_image(root / f"class{i:03d}" / "only.png", tuple(int(c) for c in rng.integers(0, 255, 3)), seed=i)
    return root


def test_one_image_per_class_is_said_and_the_head_fit_shows_progress(tmp_path: Path, tiny_weights, monkeypatch):
    monkeypatch.setattr(lightweight, "PROGRESS_SECONDS", 0.0)
    messages = tmp_path / "stderr"
    with open(messages, "w") as err:
        headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                  workflow="lightweight", workers=0, cache_dir=tmp_path / "cache").fit(
            one_image_classes(tmp_path / "data", 12), console=Console(err=err))
    text = messages.read_text()
    assert "12 train / 0 val / 0 test images" in text
    assert "12 of 12 classes have no validation image" in text
    assert "fitting the head: L2 C=0.1, iteration 1," in text


def test_the_head_fit_memory_does_not_grow_with_classes_times_rows(monkeypatch):
    # 3,000 classes of one image and its mirror: 6,000 rows. All their logits at once would be
    # 72 MB per float32 temporary, their probabilities 144 MB in float64: 845 MB at the peak
    # before the fit worked a bounded block of rows at a time, 50 MB after.
    import scipy.optimize  # noqa: F401  imported first: only the fit's own memory is measured
    import sklearn.model_selection  # noqa: F401

    monkeypatch.setattr(linear, "MAX_ITER", 3)
    classes, dim = 3000, 32
    rng = np.random.default_rng(0)
    rows = Rows.from_array(rng.standard_normal((2 * classes, dim)).astype(np.float32),
                           np.concatenate([np.arange(classes)] * 2))
    tracemalloc.start()
    try:
        head = linear.fit_linear_head(rows, None, classes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head.weight.shape == (classes, dim)
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB"


def test_predict_on_many_small_files_starts_no_worker_process(cli, tiny_args, tiny_data: Path, tmp_path: Path,
                                                             monkeypatch):
    # Worker processes cost more than decoding 50,000 small files (benchmarks/bench_hardening.py):
    # on a CPU, images are decoded on threads of the predicting process, in the same order.
    assert cli("train", tiny_data, "--out", tmp_path / "run", *tiny_args, "--epochs", "1")[0] == 0
    rng = np.random.default_rng(0)
    for i in range(300):
        make_image(tmp_path / "many" / f"{i % 10}" / f"{i:04d}.png", tuple(int(c) for c in rng.integers(0, 255, 3)),
                   size=(8, 8), seed=i)
    (tmp_path / "many" / "0" / "broken.png").write_bytes(b"not a png")
    from headstart.data.images import network_input

    model = headstart.load(tmp_path / "run", verbose=0)
    # One image at a time, straight into the network: what the batched, threaded path must give.
    reference = {str(p): float(model.run(network_input(p, model.preprocessing)[None]).max())
                 for p in sorted((tmp_path / "many").rglob("*.png")) if p.name != "broken.png"}

    from headstart.data import loader

    def no_loader(*args, **kwargs):
        raise AssertionError("a DataLoader (worker processes) was started")

    monkeypatch.setattr(loader, "make_loader", no_loader)
    status, captured = cli("predict", tmp_path / "run", tmp_path / "many", "--output", tmp_path / "p.csv")
    assert status == 0, captured.stderr
    rows = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert len(rows) == 301 and [r[0] for r in rows if r[-1]] == [str(tmp_path / "many" / "0" / "broken.png")]
    assert "300 prediction(s)" in captured.stderr and "1 image(s) could not be read" in captured.stderr
    for path, _, probability, *_ in (r for r in rows if not r[-1]):
        assert abs(float(probability) - reference[path]) < 1e-6
