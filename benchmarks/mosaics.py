"""A multi-label image set built from real photos: seeded 2x2 mosaics, each labelled with the classes it shows.

There is no multi-label set among ``../shared/datasets``; this builds one from its photos.
Each of a mosaic's four cells shows a photo of one of eight classes (cat and dog from
cats_and_dogs_filtered, ant and bee from hymenoptera_data, four textures from dtd10),
or with probability ``blank`` a plain grey cell; the mosaic's labels are the classes of
its photos, so a mosaic of four grey cells has none ("none of these"). Photos are drawn
without replacement from each class's pool, which is reshuffled and reused only once it
runs out (dtd10 has 120 photos per texture). Writes ``images/*.jpg`` and ``labels.csv``
(``path``, ``label`` with labels ``;``-separated) under the output folder.

Used by ``bench_multilabel.py`` and by the test suite.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageOps

__all__ = ["CLASSES", "make_mosaics"]

# class -> folders of ../shared/datasets holding its photos
CLASSES = {
    "cat": ("cats_and_dogs_filtered/train/cats", "cats_and_dogs_filtered/validation/cats"),
    "dog": ("cats_and_dogs_filtered/train/dogs", "cats_and_dogs_filtered/validation/dogs"),
    "ant": ("hymenoptera_data/train/ants", "hymenoptera_data/val/ants"),
    "bee": ("hymenoptera_data/train/bees", "hymenoptera_data/val/bees"),
    "banded": ("dtd10/banded",),
    "chequered": ("dtd10/chequered",),
    "cracked": ("dtd10/cracked",),
    "bubbly": ("dtd10/bubbly",),
}


class _Pool:
    """A class's photos, drawn in a seeded order without replacement until they run out."""

    def __init__(self, photos: list[Path], rng: random.Random):
        self.photos, self.rng, self.queue = sorted(photos), rng, []

    def draw(self) -> Path:
        if not self.queue:
            self.queue = list(self.photos)
            self.rng.shuffle(self.queue)
        return self.queue.pop()


def make_mosaics(datasets: Path, out: Path, count: int, size: int = 224, seed: int = 0, blank: float = 0.2,
                 classes: tuple[str, ...] = tuple(CLASSES)) -> Path:
    """Write ``count`` mosaics of ``size`` pixels under ``out``; returns the label file's path."""
    rng = random.Random(seed)
    pools = {c: _Pool([p for folder in CLASSES[c] for p in (datasets / folder).iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png")], rng) for c in classes}
    (out / "images").mkdir(parents=True, exist_ok=True)
    cell = size // 2
    rows = []
    for i in range(count):
        mosaic = Image.new("RGB", (size, size), (128, 128, 128))
        shown = set()
        for position in range(4):
            if rng.random() < blank:
                continue
            name = rng.choice(classes)
            with Image.open(pools[name].draw()) as photo:
                tile = ImageOps.fit(ImageOps.exif_transpose(photo).convert("RGB"), (cell, cell))
            mosaic.paste(tile, ((position % 2) * cell, (position // 2) * cell))
            shown.add(name)
        path = Path("images") / f"mosaic_{i:04d}.jpg"
        mosaic.save(out / path, quality=90)
        rows.append((path.as_posix(), ";".join(sorted(shown))))
    labels = out / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return labels
