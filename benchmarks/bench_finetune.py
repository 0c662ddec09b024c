"""Where a fine-tuning step's time goes on this machine: decoding and augmentation, forward,
backward, optimiser; for each precision, memory layout and number of unfrozen blocks.

    python benchmarks/bench_finetune.py ../shared/datasets/dtd10

The same batches (EfficientNet-Lite0 at its own 224 px, the standard workflow's ``light``
augmentation, batch 32) go through every configuration, so the ratios compare like with like.
Prints img/s per phase (median over the batches, the first left out as warm-up) and each
configuration's training throughput against fp32, contiguous, everything unfrozen. Run by hand;
not a test.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch

from headstart.backbone.freeze import unfreeze
from headstart.backbone.head import ClassifierNet
from headstart.backbone.pretrained import create_backbone
from headstart.config import BackboneRequest, HeadSpec
from headstart.data.dataset import discover
from headstart.data.loader import ImageDataset, make_loader, train_transform
from headstart.device import autocast

# (precision, memory layout, blocks unfrozen): the baseline first.
CONFIGURATIONS = [("fp32", "contiguous", None), ("fp32", "channels-last", None), ("bf16", "contiguous", None),
                  ("bf16", "channels-last", None), ("bf16", "channels-last", 4), ("bf16", "channels-last", 2)]


def decode_speed(dataset: ImageDataset, count: int) -> float:
    """Images per second decoded and augmented in this process."""
    start = time.perf_counter()
    for i in range(count):
        dataset[i % len(dataset)]
    return count / (time.perf_counter() - start)


def step_times(net: ClassifierNet, batches: list, precision: str, layout: str) -> tuple[float, float, float]:
    """Median seconds of forward, backward and optimiser step over ``batches`` (the first is warm-up)."""
    fmt = torch.channels_last if layout == "channels-last" else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    criterion = torch.nn.CrossEntropyLoss()
    phases: list[tuple[float, float, float]] = []
    for batch in batches:
        images = batch.images.contiguous(memory_format=fmt)
        start = time.perf_counter()
        with autocast(torch.device("cpu"), dtype):
            logits = net(images)
        loss = criterion(logits.float(), batch.labels)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        phases.append((forward - start, backward - forward, time.perf_counter() - backward))
    return tuple(statistics.median(p[k] for p in phases[1:]) for k in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="an image folder (one subfolder per class, or split folders)")
    parser.add_argument("--batches", type=int, default=6, help="batches timed per configuration (first: warm-up)")
    args = parser.parse_args()
    split = discover(args.data, 0.2, 0.2, 0)
    torch.manual_seed(0)
    backbone = create_backbone(BackboneRequest("efficientnet_lite0"))
    dataset = ImageDataset([s.path for s in split.train], [s.label for s in split.train],
                           train_transform(backbone.preprocessing, "light"))
    batches = list(itertools.islice(iter(make_loader(dataset, 32, shuffle=True, workers=2)), args.batches))
    size = len(batches[0].labels)
    print(f"{args.data}: {len(split.train)} training images; {torch.get_num_threads()} threads; batch {size}")
    print(f"decoding + light augmentation: {decode_speed(dataset, 64):.0f} img/s in one process")
    baseline = None
    for precision, layout, last in CONFIGURATIONS:
        net = ClassifierNet.create(backbone, HeadSpec(len(split.classes)))
        unfreeze(net.backbone, last)
        forward, backward, step = step_times(net, batches, precision, layout)
        speed = size / (forward + backward + step)
        baseline = baseline or speed
        print(f"{precision} {layout:13s} unfrozen {'all' if last is None else f'last {last}':6s}: "
              f"forward {size / forward:6.1f} img/s, backward {size / backward:6.1f} img/s, "
              f"step {step * 1000:4.0f} ms -> {speed:5.1f} img/s, {speed / baseline:4.2f}x")


if __name__ == "__main__":
    main()
