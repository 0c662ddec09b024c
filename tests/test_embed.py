"""Embeddings out (``embed``), similar photos found (``index``, ``similar``) and which photos to
label next (``suggest``): the tiny random backbone on generated images."""

from __future__ import annotations

import colorsys
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_BACKBONE, make_folder, make_image, random_weights, shared_dataset

from headstart.embed import read_parquet, select_batch, uncertainty


@pytest.fixture
def tiny_source(tiny_weights: Path, tmp_path: Path) -> list[str]:
    """The options that embed with the tiny backbone, eagerly, into a fresh cache."""
    return ["--backbone", TINY_BACKBONE, "--weights", str(tiny_weights), "--image-size", "32", "--engine", "eager",
            "--workers", "0", "--cache-dir", str(tmp_path / "cache")]


def _texture(path: Path, seed: int, count: int = 12) -> Path:
    """A photo-like image no other seed resembles: coloured waves at random angles, over a
    colour of its own (hues spread around the wheel, ``count`` of them)."""
    rng = np.random.default_rng(seed)
    hue = np.array(colorsys.hsv_to_rgb((seed % count) / count, 0.7, 0.8)) * 255
    y, x = np.mgrid[0:64, 0:80] / 64.0
    channels = []
    for base in hue:
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        channels.append(base + 40 * wave)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)).save(path)
    return path


def test_embed_writes_one_row_per_photo_with_its_split_label_and_vector(cli, tiny_source, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=6, split_folders=True)
    out = tmp_path / "photos.parquet"
    status, captured = cli("embed", data, "--output", out, *tiny_source)
    assert status == 0, captured.stderr
    assert captured.stdout.strip() == str(out)
    embeddings = read_parquet(out)
    assert len(embeddings.photos) == 12
    assert embeddings.vectors.shape == (12, embeddings.identity.num_features)
    assert np.isfinite(embeddings.vectors).all()
    assert {(p.split, p.label) for p in embeddings.photos} == {(s, c) for s in ("train", "val") for c in ("red", "blue")}
    assert all(p.path.is_absolute() and p.label in p.path.parent.name for p in embeddings.photos)
    # A Parquet reader sees a fixed-size list column, one row per photo.
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.schema.field("vector").type.list_size == embeddings.identity.num_features


def test_a_folder_without_class_folders_is_embedded_unlabelled(cli, tiny_source, tmp_path: Path):
    for i in range(3):
        make_image(tmp_path / "pile" / "sub" / f"{i}.png", (90, 90, 90), seed=i)
    out = tmp_path / "pile.parquet"
    status, captured = cli("embed", tmp_path / "pile", "--output", out, *tiny_source)
    assert status == 0, captured.stderr
    assert [(p.path.name, p.split, p.label) for p in read_parquet(out).photos] == [
        ("0.png", "", ""), ("1.png", "", ""), ("2.png", "", "")]


def test_embed_with_a_run_uses_the_runs_backbone_and_preprocessing(cli, tiny_run: Path, tmp_path: Path):
    out = tmp_path / "run.parquet"
    status, captured = cli("embed", tiny_run.parent / "data", "--model", tiny_run, "--output", out, "--engine", "eager",
                           "--workers", "0", "--cache-dir", tmp_path / "cache")
    assert status == 0, captured.stderr
    identity = read_parquet(out).identity
    assert "tiny.safetensors" in identity.weights and identity.preprocessing.image_size == 32


def test_the_python_api_embeds_images_in_order_nan_for_a_broken_one(tiny_weights: Path, tmp_path: Path):
    import headstart

    good = [make_image(tmp_path / f"{i}.png", (200, 40, 40), seed=i) for i in range(2)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    engine="eager", workers=0, cache_dir=tmp_path / "cache", verbose=0)
    vectors = clf.embed([good[0], broken, good[1]])
    assert vectors.shape[0] == 3 and np.isnan(vectors[1]).all() and np.isfinite(vectors[[0, 2]]).all()
    assert not np.allclose(vectors[0], vectors[2])


def test_a_mirrored_reencoded_copy_finds_its_original_first(cli, tiny_source, tmp_path: Path):
    photos = [_texture(tmp_path / "photos" / f"{i:02d}.png", seed=i) for i in range(12)]
    query = tmp_path / "query.jpg"
    Image.open(photos[3]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(query, quality=60)
    status, captured = cli("index", tmp_path / "photos", "--out", tmp_path / "index", *tiny_source)
    assert status == 0, captured.stderr
    out = tmp_path / "near.csv"
    status, captured = cli("similar", tmp_path / "index", query, "--k", "3", "--output", out,
                           "--cache-dir", tmp_path / "cache")
    assert status == 0, captured.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert Path(rows[0]["path"]) == photos[3].resolve()
    distances = [float(r["distance"]) for r in rows]
    assert distances == sorted(distances) and distances[0] < distances[1]
    # An indexed photo is not its own neighbour.
    status, captured = cli("similar", tmp_path / "index", photos[3], "--k", "2", "--cache-dir", tmp_path / "cache")
    assert status == 0 and str(photos[3].resolve()) not in [line.split("\t")[3] for line in
                                                            captured.stdout.splitlines()]


@pytest.mark.slow
def test_a_real_photo_mirrored_and_reencoded_is_found_first_as_a_near_duplicate(cli, tmp_path: Path):
    """The embedded backbone on real photos: the copy is nearer than inspect's near-duplicate
    threshold (a similarity of 0.90), every other photo far beyond it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cats = [Path(shutil.copy(p, photos)) for p in
            sorted((shared_dataset("cats_and_dogs_filtered") / "train" / "cats").glob("*.jpg"))[:20]]
    query = tmp_path / "query.jpg"
    Image.open(cats[7]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(query, quality=50)
    cache = ["--cache-dir", tmp_path / "cache"]
    assert cli("index", photos, "--out", tmp_path / "index", *cache)[0] == 0
    status, captured = cli("similar", tmp_path / "index", query, "--k", "2", *cache)
    assert status == 0, captured.stderr
    (_, _, first, path), (_, _, second, _) = (line.split("\t") for line in captured.stdout.splitlines())
    assert Path(path) == cats[7].resolve() and float(first) < 0.10 < float(second)


def test_the_hnsw_graph_finds_what_exact_search_finds(tmp_path: Path):
    from headstart.config import BackboneRequest, Preprocessing
    from headstart.embed import BackboneIdentity, Embeddings, NeighbourIndex, Photo, build_index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    identity = BackboneIdentity("tiny", "none", 16, Preprocessing((3, 32, 32), "bicubic", (0.5,) * 3, (0.5,) * 3, 1.0))
    embeddings = Embeddings([Photo(tmp_path / f"{i}.png") for i in range(60)], vectors, identity, BackboneRequest("tiny"))
    exact = NeighbourIndex(build_index(embeddings, tmp_path / "exact"))
    graph = NeighbourIndex(build_index(embeddings, tmp_path / "graph", exact_up_to=10))
    assert exact.record.search == "exact" and graph.record.search == "faiss"
    (found_exact, far_exact), (found_graph, far_graph) = (i.search(vectors[:5], 3) for i in (exact, graph))
    assert (found_exact[:, 0] == np.arange(5)).all() and (found_graph == found_exact).all()
    assert np.allclose(far_graph, far_exact, atol=2e-3)


def test_an_index_refuses_queries_embedded_with_another_backbone(cli, tiny_source, tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=3)
    assert cli("index", data, "--out", tmp_path / "index", *tiny_source)[0] == 0
    other = random_weights(TINY_BACKBONE, tmp_path / "other.safetensors", seed=1)
    queries = tmp_path / "queries.parquet"
    options = [*tiny_source]
    options[options.index("--weights") + 1] = str(other)
    assert cli("embed", data, "--output", queries, *options)[0] == 0
    status, captured = cli("similar", tmp_path / "index", queries)
    assert status == 2
    assert captured.stderr.count("\n") == 1 and "embedded with backbone" in captured.stderr
    assert "other.safetensors" in captured.stderr


def test_uncertainty_is_one_where_the_model_cannot_tell():
    proba = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert np.allclose(uncertainty(proba), [1.0, 0.0, 0.7])
    # Multi-label: the class nearest its threshold decides.
    assert np.allclose(uncertainty(np.array([[0.9, 0.3]]), np.array([0.5, 0.3])), [1.0])


def test_suggest_spreads_its_picks_where_the_most_uncertain_are_near_copies():
    rng = np.random.default_rng(0)
    copies = rng.normal(size=(1, 32)) + 0.01 * rng.normal(size=(10, 32))
    others = rng.normal(size=(10, 32))
    e = np.concatenate([copies, others])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    scores = np.concatenate([np.full(10, 0.9), np.full(10, 0.6)])
    picked = select_batch(scores, e, 5)
    assert len(set(picked)) == 5
    assert picked[0] < 10 and sum(i < 10 for i in picked) == 1  # one of the near-copies, then the others
    assert sorted(np.argsort(-scores, kind="stable")[:5]) == list(range(5))  # what uncertainty alone would pick


def test_suggest_never_returns_a_photo_twice_nor_a_labelled_one(cli, tiny_run: Path, tmp_path: Path):
    unlabelled = [make_image(tmp_path / "new" / f"{i}.png", (120, 40, 160), seed=i) for i in range(5)]
    labelled = tiny_run.parent / "data"
    out = tmp_path / "next.csv"
    status, captured = cli("suggest", tiny_run, tmp_path / "new", labelled, unlabelled[0], "--budget", "50",
                           "--output", out, "--cache-dir", tmp_path / "cache")
    assert status == 0, captured.stderr
    rows = list(csv.DictReader(out.open()))
    paths = [Path(r["path"]) for r in rows]
    assert sorted(paths) == sorted(p.resolve() for p in unlabelled)  # each once, no training photo
    assert {r["predicted"] for r in rows} <= {"red", "blue"}
    assert "only 5 photo(s) to suggest" in captured.stderr
    tasks = json.loads(out.with_suffix(".labelstudio.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") and t["data"]["image"].endswith(f"new/{p.name}")
               for t, p in zip(tasks, paths))
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [rows[0]["predicted"]]


def test_the_python_api_suggests_within_its_budget(tiny_run: Path, tmp_path: Path):
    import headstart

    clf = headstart.load(tiny_run, verbose=0).set_params(cache_dir=tmp_path / "cache", workers=0)
    paths = [make_image(tmp_path / f"{i}.png", (40, 200, 40), seed=i) for i in range(4)]
    picked = clf.suggest([*paths, paths[0]], 3)
    assert len(picked) == 3 and len({s.path for s in picked}) == 3
    assert all(0 <= s.uncertainty <= 1 and 0 <= s.probability <= 1 for s in picked)


def test_a_lightweight_run_suggests_with_its_own_probabilities(tiny_weights: Path, tmp_path: Path):
    """Its dense layer on the cached features, not a second pass through the network: the same
    probabilities, to the rounding of features cached as float16."""
    import headstart

    clf = headstart.ImageClassifier(backbone=TINY_BACKBONE, weights=str(tiny_weights), image_size=32,
                                    workflow="lightweight", engine="eager", workers=0, cache_dir=tmp_path / "cache",
                                    verbose=0).fit(make_folder(tmp_path / "data", per_class=6))
    paths = [make_image(tmp_path / "new" / f"{i}.png", (120 + 20 * i, 40, 120), seed=i) for i in range(4)]
    picked = clf.suggest(paths, 4)
    through_network = dict(zip([p.resolve() for p in paths], clf.predict_proba(paths).max(axis=1)))
    assert sorted(s.path for s in picked) == sorted(through_network)
    assert all(abs(s.probability - through_network[s.path]) < 5e-3 for s in picked)


@pytest.mark.parametrize("argv, status, message", [
    (["embed", "{tmp}/missing", "--output", "{tmp}/x.parquet"], 3, "no such folder"),
    (["embed", "{tmp}", "--output", "{tmp}/x.csv"], 2, "--output"),
    (["embed", "{tmp}", "--model", "{tmp}/run", "--backbone", "resnet18", "--output", "{tmp}/x.parquet"], 2,
     "--model"),
    (["similar", "{tmp}/missing", "q.jpg"], 2, "not an index folder"),
    (["suggest", "{tmp}/run", "{tmp}", "--budget", "0"], 2, "--budget"),
    (["suggest", "{tmp}/run", "{tmp}", "--budget", "many"], 2, "--budget"),
])
def test_a_bad_argument_is_a_one_line_error(cli, tmp_path: Path, argv, status, message):
    code, captured = cli(*(a.format(tmp=tmp_path) for a in argv))
    assert code == status
    assert captured.stderr.count("\n") == 1 and message in captured.stderr
