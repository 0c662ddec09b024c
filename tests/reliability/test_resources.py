"""Bounded resources: memory does not grow with the number of images, nor exceed what is free."""

from pathlib import Path

import torch

import headstart
from headstart import device as device_module
from headstart._console import Console
from headstart.data import images as images_module
from headstart.data.loader import ImageDataset, make_loader
from headstart.data.workers import available_cores

from conftest import make_folder


def test_predict_streams_batch_by_batch(tmp_path: Path, tiny_weights: Path, monkeypatch):
    data = make_folder(tmp_path / "d", per_class=6)
    clf = headstart.ImageClassifier(backbone="test_efficientnet", weights=str(tiny_weights), image_size=32,
                                    workflow="standard", epochs=1, batch_size=4, workers=0,
                                    verbose=0).fit(data)
    many = sorted(make_folder(tmp_path / "many", per_class=20).rglob("*.png"))
    decoded = []
    real_load = images_module.load_image  # on a CPU, images are decoded in threads by data.images
    monkeypatch.setattr(images_module, "load_image", lambda *a, **k: decoded.append(a[0]) or real_load(*a, **k))
    predictions = clf.iter_predict(many, batch_size=4)
    first = next(predictions)
    assert first.path == many[0] and len(decoded) == 4  # one batch decoded, not forty images
    assert len(list(predictions)) == 39 and len(decoded) == 40


def test_batch_size_is_bounded_by_free_memory(monkeypatch):
    monkeypatch.setattr(device_module, "available_memory", lambda device: 2**30)  # 1 GiB free
    import io

    err = io.StringIO()
    size = device_module.bounded_batch_size(1000, (3, 224, 224), torch.device("cpu"), Console(err=err))
    assert 1 <= size < 20 and "--batch-size 1000 would not fit" in err.getvalue()
    assert device_module.bounded_batch_size(4, (3, 224, 224), torch.device("cpu"), Console(err=err)) == 4


def test_decoding_workers_are_bounded_by_the_cores(tmp_path: Path):
    paths = sorted(make_folder(tmp_path / "d", per_class=40).rglob("*.png"))
    loader = make_loader(ImageDataset(paths, None, lambda im: im), batch_size=2, workers=999)
    assert 1 <= loader.num_workers <= available_cores()
