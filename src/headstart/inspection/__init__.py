"""``headstart inspect``: what is wrong with an image folder, before training on it.

Five checks, each a small pure function over hashes, embeddings or counts
(:mod:`.checks`, and :mod:`headstart.features.neighbours` for near-duplicates):

* unreadable files (the header check of :func:`headstart.data.discover`, plus
  images that fail only when decoded);
* exact duplicates, by a hash of the file's bytes;
* near-duplicates, by cosine similarity of the backbone's pooled features;
* likely label errors, by confident learning on out-of-fold probabilities;
* class imbalance.

Duplicates that cross splits (the same photo in train and test) or carry
different labels are flagged loudly: they inflate validation scores or teach
the model contradictions. :mod:`.folder` runs the checks on a folder, with
embeddings from the feature pipeline, so inspecting a folder that was trained
on (lightweight workflow, same backbone) costs seconds; :mod:`.page` writes
``inspect.csv`` and ``inspect.html``.

PyTorch, timm and scikit-learn are imported only where they are used: the CLI
imports this package for its options' defaults, and ``headstart predict
MODEL.onnx`` must not load them.
"""

from .checks import (
    FEW_IMAGES,
    IMBALANCE_RATIO,
    KINDS,
    TITLES,
    class_imbalance,
    file_digests,
    find_exact_duplicates,
    find_label_errors,
    out_of_fold_probabilities,
)
from .folder import (
    Finding,
    Inspection,
    InspectSettings,
    inspect_folder,
    load_split,
    summary_lines,
)
from .page import CSV_COLUMNS, write_inspection

__all__ = [
    "KINDS",
    "TITLES",
    "CSV_COLUMNS",
    "IMBALANCE_RATIO",
    "FEW_IMAGES",
    "Finding",
    "InspectSettings",
    "Inspection",
    "load_split",
    "file_digests",
    "find_exact_duplicates",
    "out_of_fold_probabilities",
    "find_label_errors",
    "class_imbalance",
    "inspect_folder",
    "summary_lines",
    "write_inspection",
]
