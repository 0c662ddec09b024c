"""Files to pixels, with Pillow alone: shared by training and by the torch-free ONNX runtime.

Finding image files (hidden files skipped, links followed but never around a
loop), checking them cheaply, decoding them upright in RGB, and the evaluation
resize and crop. Nothing here imports PyTorch, so ``headstart predict
MODEL.onnx`` runs where only onnxruntime, NumPy and Pillow are installed.
Decoding ahead in child processes is :mod:`headstart.data.decode_ahead`'s.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..config import Preprocessing
from ..errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "collect_images",
    "load_image",
    "probe_image",
    "resize_size",
    "CenterCropResize",
    "network_input",
    "decode_failure",
    "DECODE_ERRORS",
    "load_thumbnail",
    "predict_in_batches",
]

try:  # HEIC/HEIF (every iPhone photo) through libheif: registered as one more Pillow format
    from pillow_heif import register_heif_opener
except ModuleNotFoundError:  # an install without it: such files are listed as skipped, with why
    _HEIF = False
else:
    register_heif_opener()
    _HEIF = True

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".heic",
                              ".heif"})
# Files a user takes for images that headstart cannot use: listed as skipped with the reason
# (and what to do), never silently left out.
_RAW = (".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw",
        ".raw", ".rwl", ".3fr", ".erf", ".kdc", ".mrw", ".x3f")
UNUSABLE_EXTENSIONS = {
    **dict.fromkeys((".svg", ".svgz"), "a vector image (SVG): export it as PNG to use it"),
    **dict.fromkeys(_RAW, "a camera raw file: export it as JPEG to use it"),
    **dict.fromkeys((".psd", ".psb"), "a Photoshop document: export it as PNG or JPEG to use it"),
    **({} if _HEIF else dict.fromkeys((".heic", ".heif"), "a HEIC/HEIF image: reading it needs pillow-heif "
                                                          "(pip install pillow-heif)")),
}
# What decoding a bad file raises (load_image turns Pillow's bomb warning into an error).
DECODE_ERRORS = (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def walk_files(folder: Path) -> Iterable[Path]:
    """Visible files below ``folder``, following links but never around a loop."""
    top = os.path.realpath(folder)
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        # A link up to ``folder``'s parent is a loop that `seen` alone would enter once, and
        # through it a class folder would take in its sibling classes' images as its own.
        if real in seen or (seen and os.path.commonpath([real, top]) == real):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if not is_hidden(name):
                yield Path(dirpath) / name


def image_files(folder: Path, unusable: dict[Path, str] | None = None) -> list[Path]:
    """The image files below ``folder``; image-like files that cannot be used (SVG, camera raw,
    Photoshop) go into ``unusable`` with the reason, when given."""
    found = []
    for path in walk_files(folder):
        suffix = path.suffix.lower()
        if suffix in UNUSABLE_EXTENSIONS:
            if unusable is not None:
                unusable[path] = UNUSABLE_EXTENSIONS[suffix]
        elif suffix in IMAGE_EXTENSIONS:
            found.append(path)
    return found


def probe_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None. Reads the header only: cheap."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _probe(path)


def _probe(path: Path) -> str | None:
    """:func:`probe_image`, for callers that already turned bomb warnings into errors."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            width, height = im.size
        if width < 1 or height < 1:
            return "image has no pixels"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"image too large (over {Image.MAX_IMAGE_PIXELS} pixels): refused as a possible decompression bomb"
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read"
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    return None


def probe_all(paths: Sequence[Path]) -> dict[Path, str]:
    # Header reads from a cold disk are I/O bound: threads overlap them without any
    # pickling. Parsing holds the GIL, though, so each thread takes 64 files at a time: one
    # future per file cost more than the parsing (3,000 files: 0.5 s against 0.2 s).
    # The warning filter is process-wide and not thread-safe to change: set once around them.
    chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=4) as pool:
            reasons = [r for part in pool.map(lambda chunk: [_probe(p) for p in chunk], chunks) for r in part]
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def collect_images(paths: Iterable[str | Path], unusable: dict[Path, str] | None = None) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (image-like
    files found there that cannot be used go into ``unusable``, with the reason)."""
    paths = [Path(p) for p in paths]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += image_files(path, unusable)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    if paths and not found:
        # Zero predictions and success would hide a wrong folder or unsupported files.
        why = next((f": {p.name} is {r}" for p, r in (unusable or {}).items()), "")
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in "
                        f"{', '.join(map(str, paths))}{why}")
    return found


def load_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode ``path`` as an upright RGB image (EXIF orientation applied).

    With ``min_size``, a large JPEG is decoded at a reduced scale (Pillow's
    draft mode: 2-8x less work) that still leaves both sides at least
    ``min_size`` pixels.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if min_size and im.format == "JPEG":
                im.draft("RGB", (min_size, min_size))
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):
                # 16-bit greyscale (PNG, TIFF) spans 0..65535, and convert() clips it at 255:
                # nearly every pixel would turn white. Scale it to 8 bits instead.
                im = im.convert("I").point(lambda v: v / 257).convert("L")
            if im.mode != "RGB":
                # Palette and LA/RGBA images carry transparency: flatten on white, as viewers do.
                if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
                    rgba = im.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(background, rgba)
                im = im.convert("RGB")
            im.load()
            return im


def load_thumbnail(path: str | Path, size: int) -> Image.Image:
    """The image at ``path``, upright, shrunk to fit ``size`` x ``size`` (decoded at reduced
    scale when it is a large JPEG)."""
    image = load_image(path, min_size=size)
    image.thumbnail((size, size))
    return image


_PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_size(pre: Preprocessing) -> int:
    """The shorter side before the centre crop: ``size / crop_pct``."""
    return math.floor(pre.image_size / pre.crop_pct)


class CenterCropResize:
    """timm's evaluation transform, resize the shorter side to ``size / crop_pct`` then centre-crop,
    done in one Pillow call that resamples only the cropped region.

    Same pixels up to rounding at the crop border, and about twice as fast:
    decoding runs on the same cores as the backbone, so this is throughput.
    """

    def __init__(self, pre: Preprocessing):
        self.height, self.width = pre.input_size[1:]
        self.scale_size = resize_size(pre)
        self.resample = _PIL_RESAMPLE[pre.interpolation]

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.scale_size / min(w, h)  # input pixels -> resized pixels
        box_w, box_h = self.width / scale, self.height / scale
        left, top = (w - box_w) / 2, (h - box_h) / 2
        return image.resize((self.width, self.height), self.resample, box=(left, top, left + box_w, top + box_h))


def network_input(source, pre: Preprocessing) -> np.ndarray:
    """One image (a path or a file object) as the network takes it: uint8, channels first,
    resized and centre-cropped per ``pre``."""
    image = CenterCropResize(pre)(load_image(source, resize_size(pre)))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def predict_in_batches(paths: Sequence[Path], pre: Preprocessing, run: Callable[[np.ndarray], np.ndarray],
                       batch_size: int, tta: bool = False, threads: int | None = None
                       ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """``(path, probabilities, None)``, or ``(path, None, why)`` for an image that cannot be
    decoded, for each of ``paths`` in order: ``run`` (uint8 images in, probabilities out) on one
    batch at a time; with ``tta``, averaged with the mirror images'.

    Decoding runs on a pool of threads in this process (Pillow releases the GIL while it decodes
    and resizes): no worker process to start, and no batch to ship between processes, which for
    50,000 small files cost more than decoding them (see benchmarks/bench_hardening.py).
    """
    from .workers import available_cores

    def decode(path: Path) -> np.ndarray | str:
        try:
            return network_input(path, pre)
        except Exception as exc:  # Pillow raises many exception types for malformed files
            return decode_failure(path, exc)

    with ThreadPoolExecutor(max_workers=threads or available_cores()) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            decoded = list(pool.map(decode, chunk))
            good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
            proba = {}
            if good:
                batch = np.stack([decoded[i] for i in good])
                out = run(batch)
                if tta:
                    out = (out + run(np.ascontiguousarray(batch[..., ::-1]))) / 2
                proba = dict(zip(good, out))
            for i, path in enumerate(chunk):
                yield (path, proba[i], None) if i in proba else (path, None, decoded[i])


def decode_failure(path: Path, exc: Exception) -> str:
    """Why ``path`` failed to decode, in the words of the header check when it has any
    ("empty file", not Pillow's "cannot identify image file ..."), so training's skip list
    and prediction's error column agree."""
    return probe_image(path) or f"cannot decode image: {exc}"
