"""Embeddings out, similar photos found, and which photos to label next.

:mod:`.photos` finds the photos of a folder or label file; :mod:`.vectors` embeds them through
the feature cache (``headstart embed``, ``ImageClassifier.embed``) and reads and writes Parquet;
:mod:`.index` builds and searches a nearest-neighbour index (``headstart index`` and
``similar``); :mod:`.suggest` picks the photos to label next (``headstart suggest``,
``ImageClassifier.suggest``). Nothing here imports PyTorch: the feature pipeline does, and only
when the cache cannot answer.

>>> from headstart.embed import build_index, embed_folder, find_similar
>>> build_index(embed_folder("photos/"), "photos.index")
>>> find_similar("photos.index", ["query.jpg"], k=5)
"""

from .index import EXACT_UP_TO, IndexRecord, Match, NeighbourIndex, build_index, find_similar
from .photos import Photo, Photos, find_photos
from .suggest import Suggestion, labelstudio_tasks, select_batch, suggest_images, suggestions_csv, uncertainty
from .vectors import (BackboneIdentity, Embeddings, embed_folder, embed_images, embed_photos, model_backbone, read_parquet,
                      run_backbone, write_parquet)

__all__ = ["EXACT_UP_TO", "IndexRecord", "Match", "NeighbourIndex", "build_index", "find_similar", "Photo", "Photos",
           "find_photos", "Suggestion", "labelstudio_tasks", "select_batch", "suggest_images", "suggestions_csv",
           "uncertainty", "BackboneIdentity", "Embeddings", "embed_folder", "embed_images", "embed_photos", "model_backbone",
           "read_parquet", "run_backbone", "write_parquet"]
