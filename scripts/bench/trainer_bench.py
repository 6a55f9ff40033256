"""Benchmark of local training: seconds per local epoch for a site of ~500 and ~2400 images.

Usage: .venv/bin/python scripts/bench/trainer_bench.py [--repeats 3] [--epochs 2] [--threads N]
       [--arch densenet121|resnet10|resnet18|smallcnn --image-size 64 --images 480] [--augment]
       [--device cpu|cuda]

Trains SmallCNN on the bundled PneumoniaMNIST subset with FedAvg (batch 32) and, for the small
site, FedProx too; prints the median wall-clock and CPU seconds per epoch over the repeats, the
load average before/after (other processes on the machine skew wall time) and the process's peak
resident set size. With ``--images N`` (or an ``--arch``/``--image-size`` other than the
default) it trains the chosen model on one site of N images (default 480) resized to the image
size, FedAvg only, and also prints the update's bytes dense and topk8 (fraction 0.05).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.storage.codec import Compression, encode_update


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--images", type=int, default=0, help="one site of N images (0: default)")
    parser.add_argument("--augment", action="store_true", help="TrainConfig(augment=True)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images or args.arch != "smallcnn" or args.image_size != 28:
        _one_site(args)
        return

    rss_start = _peak_rss_mib()
    splits = load_bundled()
    spec = ModelSpec()
    state = federated_state(initial_model(spec, seed=0))
    sites = {
        500: splits.train.subset(np.random.default_rng(0).choice(len(splits.train), 500, False)),
        2428: splits.train,
    }
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"peak RSS after imports and data: {_peak_rss_mib():.0f} MiB (start {rss_start:.0f})")
    runs = [(500, "fedavg", 0.0), (2428, "fedavg", 0.0), (500, "fedprox", 0.1)]
    # warm-up (first call pays one-off kernel initialisation)
    train_local(state, sites[500], spec=spec, config=TrainConfig(seed=0))
    for n, algorithm, mu in runs:
        config = TrainConfig(epochs=args.epochs, seed=0, algorithm=algorithm, mu=mu)
        walls, cpus = [], []
        for _ in range(args.repeats):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            train_local(state, sites[n], spec=spec, config=config)
            walls.append((time.perf_counter() - wall0) / args.epochs)
            cpus.append((time.process_time() - cpu0) / args.epochs)
        print(
            f"{algorithm:8s} {n:5d} images, batch 32: "
            f"{statistics.median(walls):.3f} s/epoch wall (min {min(walls):.3f}), "
            f"{statistics.median(cpus):.3f} s/epoch CPU, "
            f"{n / statistics.median(walls):.0f} images/s"
        )
    start = time.perf_counter()
    result = train_local(
        state, sites[500], spec=spec, config=TrainConfig(epochs=1, seed=0), val=splits.val
    )
    print(
        f"one epoch on 500 + validation on {len(splits.val)}: "
        f"{time.perf_counter() - start:.3f} s (result.seconds {result.seconds:.3f})"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"peak RSS: {_peak_rss_mib():.0f} MiB")


def _one_site(args: argparse.Namespace) -> None:
    n = args.images or 480
    spec = ModelSpec(arch=args.arch, image_size=args.image_size)
    train = load_bundled().train
    train = train.subset(np.random.default_rng(0).choice(len(train), n, False))
    started = time.perf_counter()
    train = train.resized(args.image_size)
    resize_s = time.perf_counter() - started
    state = federated_state(initial_model(spec, seed=0))
    params = sum(t.numel() for t in state.values())
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {args.device}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.arch} at {args.image_size} px: {len(state)} federated tensors, {params} values; "
        f"{n} images resized in {resize_s:.2f} s"
    )
    config = TrainConfig(epochs=args.epochs, seed=0, augment=args.augment, device=args.device)
    walls, cpus = [], []
    result = None
    for _ in range(args.repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = train_local(state, train, spec=spec, config=config)
        walls.append((time.perf_counter() - wall0) / args.epochs)
        cpus.append((time.process_time() - cpu0) / args.epochs)
    print(
        f"fedavg {n} images, batch 32{' augmented' if args.augment else ''}: "
        f"{statistics.median(walls):.2f} s/epoch wall (min {min(walls):.2f}), "
        f"{statistics.median(cpus):.2f} s/epoch CPU, {n / statistics.median(walls):.0f} images/s"
    )
    assert result is not None
    for compression in (Compression(), Compression(method="topk8", fraction=0.05)):
        blob = encode_update(result.delta, spec=spec, round=1, compression=compression).blob
        print(f"update bytes {compression.method:5s}: {len(blob)} ({len(blob) / 2**20:.2f} MiB)")
    print(f"load average after: {os.getloadavg()[0]:.2f}; peak RSS {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
