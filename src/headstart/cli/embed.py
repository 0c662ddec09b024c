"""``headstart embed``, ``index``, ``similar`` and ``suggest``: embeddings out, similar photos
found, and which photos to label next.

The work is :mod:`headstart.embed`'s; here are the options, the refusals before any work and
the lines printed. The options are declared here rather than in :mod:`.parser` (built with its
helpers), which holds the other commands' and is at the size a module may reach.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._console import Console
from .._io import csv_text, write_text
from ..errors import ExitStatus, UsageError
from .parser import _DEFAULT, _add_extraction, _add_hardware, _add_labels, _command, check_output

__all__ = ["add_embed", "add_index", "add_similar", "add_suggest", "embed_command", "index_command",
           "similar_command", "suggest_command"]

_DATA_HELP = ("image folder: one subfolder per class, or train/ and val/ (or validation/) split folders "
              "(each photo's split and label are kept), or any other folder of photos, searched recursively "
              "(unlabelled); with --labels, the folder the label file's relative paths start from")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {number}")
    return number


def _add_source(parser: argparse.ArgumentParser) -> None:
    """The photos to embed, and the backbone that embeds them: named, or a run's own."""
    parser.add_argument("data", type=Path, metavar="DATA", nargs="?", help=_DATA_HELP)
    _add_labels(parser)
    g = parser.add_argument_group("backbone")
    g.add_argument("--backbone", help=f"efficientnet_lite0/1/2 (embedded weights) or any timm model name "
                   f"(default: {_DEFAULT.backbone}); the feature cache is shared with train and inspect")
    g.add_argument("--weights", metavar="FILE", help="local weights (.safetensors, or a .pth state_dict)")
    g.add_argument("--model", type=Path, metavar="RUN", help="the backbone a run folder was trained on, "
                   "with its preprocessing (its pretrained weights: a fine-tuned backbone's are not used)")
    _add_extraction(g, _DEFAULT)
    _add_hardware(g, _DEFAULT, precision=False)


def add_embed(commands, name: str) -> argparse.ArgumentParser:
    e = _command(commands, name, "write every photo's embedding (the backbone's pooled features) to Parquet",
                 "  headstart embed photos/ --output photos.parquet\n"
                 "  headstart embed --labels labels.csv --model runs/pets --output pets.parquet")
    _add_source(e)
    e.add_argument("--output", type=Path, required=True, metavar="FILE.parquet",
                   help="one row per photo: path, split, label (where known) and vector")
    e.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    return e


def add_index(commands, name: str) -> argparse.ArgumentParser:
    i = _command(commands, name, "build a nearest-neighbour index over a folder's embeddings",
                 "  headstart index photos/ --out photos.index\n"
                 "  headstart similar photos.index query.jpg --k 5")
    _add_source(i)
    i.add_argument("--out", type=Path, required=True, metavar="DIR", help="the index folder to write")
    i.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    return i


def add_similar(commands, name: str) -> argparse.ArgumentParser:
    s = _command(commands, name, "list each query photo's nearest photos in an index, with their distance",
                 "  headstart similar photos.index query.jpg more_queries/ --k 5\n"
                 "  headstart similar photos.index queries.parquet --output neighbours.csv")
    s.add_argument("index", type=Path, metavar="DIR", help="an index folder written by 'headstart index'")
    s.add_argument("queries", type=Path, nargs="+", metavar="QUERY", help="image files or folders (embedded "
                   "with the index's backbone), or one .parquet file written by 'headstart embed'")
    s.add_argument("--k", type=_positive, default=5, metavar="K", help="neighbours per query (default: 5)")
    s.add_argument("--output", type=Path, metavar="FILE.csv", help="also write query, rank, path, distance, "
                   "split and label as CSV")
    s.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output")
    s.add_argument("--cache-dir", type=Path, help="where features are cached (default: the user cache folder)")
    return s


def add_suggest(commands, name: str) -> argparse.ArgumentParser:
    s = _command(commands, name, "choose the unlabelled photos whose labels would help a model most",
                 "  headstart suggest runs/pets unlabelled/ --budget 50 --output next.csv")
    s.add_argument("run", type=Path, metavar="RUN", help="a run folder written by 'headstart train'")
    s.add_argument("unlabelled", type=Path, nargs="+", metavar="UNLABELLED",
                   help="image files or folders (recursive); photos in the run's split.csv are left out")
    s.add_argument("--budget", type=_positive, required=True, metavar="N", help="how many photos to suggest")
    s.add_argument("--output", type=Path, metavar="FILE.csv", help="write rank, path, predicted, probability "
                   "and uncertainty, and beside it FILE.labelstudio.json, a Label Studio import with the "
                   "predictions as pre-annotations")
    s.add_argument("--overwrite", action="store_true", help="allow replacing existing output files")
    s.add_argument("--cache-dir", type=Path, help="where features are cached (default: the user cache folder)")
    return s


def _feature_request(args: argparse.Namespace, console: Console):
    """What embeds the photos: ``--model``'s backbone, else ``--backbone``'s."""
    from ..config import BackboneRequest
    from ..embed import run_backbone
    from ..features.pipeline import FeatureRequest
    from ..record import read_config, read_metrics
    from ..runfolder import METRICS_FILE

    if args.model is not None:
        if args.backbone or args.weights or args.image_size:
            raise UsageError("--model RUN: the backbone is the run's; drop --backbone, --weights and --image-size")
        backbone = run_backbone(read_config(args.model))
        fine_tune = read_metrics(args.model).fine_tune if (args.model / METRICS_FILE).is_file() else None
        if fine_tune is not None and fine_tune.kept:
            console.warn(f"{args.model} fine-tuned its backbone: the embeddings come from its pretrained weights")
    else:
        backbone = BackboneRequest(args.backbone or _DEFAULT.backbone, args.weights, args.image_size)
    return FeatureRequest(backbone, engine=args.engine, device=args.device, workers=args.workers)


def _embed(args: argparse.Namespace, console: Console):
    """The embeddings of DATA (or --labels), through the feature cache."""
    from ..embed import embed_folder
    from ..features.cache import CacheLayout
    from ..features.pipeline import check_backbone
    from ..record import label_root

    request = _feature_request(args, console)
    check_backbone(request, CacheLayout(args.cache_dir))
    return embed_folder(label_root(args.data, args.labels), request, args.labels, args.label_sep, args.cache_dir,
                        console)


def embed_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..embed import write_parquet

    check_output(args.output, args.overwrite, (".parquet",))
    embeddings = _embed(args, console)
    write_parquet(embeddings, args.output)
    console.info(f"{len(embeddings.photos)} photo(s), {embeddings.identity.num_features} numbers each, "
                 f"backbone {embeddings.identity.describe()}")
    console.result(str(args.output))
    return ExitStatus.SUCCESS


def index_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..embed import build_index
    from ..runfolder import prepare_output_dir

    prepare_output_dir(args.out, args.overwrite)  # refused before any photo is embedded
    embeddings = _embed(args, console)
    out = build_index(embeddings, args.out, overwrite=True)
    console.info(f"indexed {len(embeddings.photos)} photo(s), backbone {embeddings.identity.describe()}")
    console.result(str(out))
    return ExitStatus.SUCCESS


def similar_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..data.images import collect_images
    from ..embed import NeighbourIndex, find_similar, read_parquet

    check_output(args.output, args.overwrite, (".csv",))
    index = NeighbourIndex(args.index)
    if any(q.suffix.lower() == ".parquet" for q in args.queries):
        if len(args.queries) > 1:
            raise UsageError("similar: give one .parquet file of queries, or image files and folders, not both")
        queries = read_parquet(args.queries[0])
    else:
        queries = collect_images(args.queries)
    matches = find_similar(index, queries, args.k, args.cache_dir, console)
    for m in matches:
        console.result(f"{m.query}\t{m.rank}\t{m.distance:.4f}\t{m.photo.path}")
    if args.output:
        write_text(args.output, csv_text(("query", "rank", "path", "distance", "split", "label"),
                                         [(str(m.query), m.rank, str(m.photo.path), f"{m.distance:.6f}",
                                           m.photo.split, m.photo.label) for m in matches]))
        console.info(f"written to {args.output}")
    return ExitStatus.SUCCESS


def suggest_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from ..data.images import collect_images
    from ..embed import labelstudio_tasks, suggestions_csv
    from ..model import load

    tasks = args.output.with_suffix(".labelstudio.json") if args.output else None
    check_output(args.output, args.overwrite, (".csv",))
    check_output(tasks, args.overwrite, (".json",), flag="--output's Label Studio file")
    paths = collect_images(args.unlabelled)
    clf = load(args.run, verbose=console.verbosity).set_params(cache_dir=args.cache_dir)
    suggestions = clf.suggest(paths, args.budget)
    for rank, s in enumerate(suggestions, 1):
        console.result(f"{rank}\t{s.path}\t{s.predicted}\t{s.probability:.3f}\t{s.uncertainty:.3f}")
    if len(suggestions) < args.budget:
        console.warn(f"only {len(suggestions)} photo(s) to suggest: the others are in {args.run}'s split.csv "
                     "or cannot be decoded")
    if args.output:
        root = Path(os.path.commonpath([p.resolve() if p.is_dir() else p.resolve().parent for p in args.unlabelled]))
        write_text(args.output, suggestions_csv(suggestions))
        write_text(tasks, labelstudio_tasks(suggestions, root, f"headstart {args.run.resolve().name}"))
        console.info(f"written to {args.output} and {tasks}; in Label Studio, serve local files from {root} "
                     f"(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root})")
    return ExitStatus.SUCCESS
