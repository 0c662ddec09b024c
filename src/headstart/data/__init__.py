"""Images in: discovery and splits (:mod:`.dataset`), label files and
in-memory labels (:mod:`.labels`), files to pixels with Pillow (:mod:`.images`),
decoding ahead without PyTorch (:mod:`.decode_ahead`), how many decoding processes
(:mod:`.workers`), and PyTorch batches (:mod:`.loader`).

Only the names below are imported with the package, and none of them imports
PyTorch: the ONNX runtime and cached reruns use this package without it.
"""

from .dataset import DatasetSplit, Sample, Skipped, discover
from .images import IMAGE_EXTENSIONS, collect_images, load_image, probe_image
from .labels import from_targets, read_label_file

__all__ = ["DatasetSplit", "Sample", "Skipped", "discover", "IMAGE_EXTENSIONS", "collect_images", "load_image",
           "probe_image", "read_label_file", "from_targets"]
