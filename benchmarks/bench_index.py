"""Nearest-neighbour search: exact NumPy search against usearch and faiss-cpu (HNSW graphs).

    python benchmarks/bench_index.py --sizes 10000 100000 --dim 1280 --queries 200

For each size, builds the same set of unit vectors four ways and times it: headstart's exact
search (:func:`headstart.features.neighbours.nearest`, a normalized dot product in blocks) over
float32 vectors, as the index stores them, and over float16 ones; a usearch HNSW index; a
faiss-cpu HNSW index (inner product, float32, ``efSearch`` 64 as usearch's default). Then each
answers ``--queries`` queries for their 10 nearest, in one batch and one alone, and each
library's recall@10 is measured against the exact answer. The vectors are clustered (a hundred
centres with noise), as a photo collection's embeddings are, 1,280-dimensional as
EfficientNet-Lite0's features; uniformly random vectors are the worst case for a graph index.
headstart uses this to choose where exact search stops (:data:`headstart.embed.index.EXACT_UP_TO`).
Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from headstart.features.embeddings import normalized_embeddings
from headstart.features.neighbours import nearest

K = 10


def clustered(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((100, dim), dtype=np.float32)
    noise = rng.standard_normal((rows, dim), dtype=np.float32)
    noise *= 0.8
    noise += centres[rng.integers(0, 100, rows)]
    return noise


def exact(base: np.ndarray):
    stored = base.copy()
    return lambda queries: nearest(stored, queries, K)[0]


def exact_f16(base: np.ndarray):
    stored = base.astype(np.float16)  # half the file, converted back a block at a time
    return lambda queries: nearest(stored, queries, K)[0]


def with_usearch(base: np.ndarray):
    from usearch.index import Index

    index = Index(ndim=base.shape[1], metric="ip", dtype="f16")
    index.add(np.arange(len(base)), base)
    return lambda queries: np.asarray(index.search(queries, K).keys).reshape(len(queries), K)


def with_faiss(base: np.ndarray):
    import faiss

    index = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(base)
    index.hnsw.efSearch = 64  # usearch's default expansion_search, for a like-for-like recall
    return lambda queries: index.search(queries, K)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"| vectors | method | build (s) | query (ms/query, batch of {args.queries}) | "
          "single query (ms) | recall@10 |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        data = normalized_embeddings(clustered(size + args.queries, args.dim, rng))
        base, queries = np.ascontiguousarray(data[:size]), np.ascontiguousarray(data[size:])
        truth = None
        for name, build in (("exact, float32", exact), ("exact, float16", exact_f16),
                            ("usearch HNSW f16", with_usearch), ("faiss HNSW32", with_faiss)):
            tick = time.perf_counter()
            search = build(base)
            built = time.perf_counter() - tick
            tick = time.perf_counter()
            found = search(queries)
            batch = (time.perf_counter() - tick) / len(queries) * 1e3
            tick = time.perf_counter()
            search(queries[:1])
            single = (time.perf_counter() - tick) * 1e3
            truth = found if truth is None else truth
            print(f"| {size:,} | {name} | {built:.2f} | {batch:.2f} | {single:.1f} | {recall(found, truth):.3f} |",
                  flush=True)

if __name__ == "__main__":
    main()
