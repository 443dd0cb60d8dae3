#!/usr/bin/env python3
"""torchvision's SimCLR augmentation pipeline on 32x32x3 images, for comparison
with `cargo run --release -p tsimcne-augment --example throughput`.

Usage: python3 bench/augment_torchvision.py [WORKERS]
Prints views/s: 2 views of each of 512 PIL images, 4 rounds, best of 3,
with the recipe's transforms (RandomResizedCrop 0.2-1, flip, ColorJitter
0.4/0.4/0.4/0.1 p=0.8, RandomGrayscale 0.2, ToTensor), on WORKERS processes
(default 2, as a DataLoader with 2 workers would).
"""
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image
import torchvision.transforms as T

T_VIEW = T.Compose([
    T.RandomResizedCrop(32, scale=(0.2, 1.0)),
    T.RandomHorizontalFlip(),
    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    T.RandomGrayscale(p=0.2),
    T.ToTensor(),
])


def work(seed):
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(256)]
    t = time.perf_counter()
    for _ in range(4):
        for im in imgs:
            T_VIEW(im)
            T_VIEW(im)
    return time.perf_counter() - t


if __name__ == "__main__":
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    best = float("inf")
    with Pool(workers) as pool:
        for _ in range(3):
            t = time.perf_counter()
            pool.map(work, range(2))  # 2 × 256 images = 512 per round
            best = min(best, time.perf_counter() - t)
    print(f"{4 * 2 * 512 / best:.0f} views/s (torchvision, 32x32x3, {workers} workers)")
