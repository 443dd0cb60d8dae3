#!/usr/bin/env python3
"""Writes a CIFAR-10-shaped archive in the official binary layout.

Usage: python3 bench/make_cifar_like.py OUT.tar.gz [IMAGES_PER_BATCH]

60,000 images by default (5 train batches and a test batch of 10,000), with
smooth gradients plus noise so the pixels compress about as badly as real
photographs. For timing `prep` only: the content is synthetic.
"""
import io
import sys
import tarfile

import numpy as np

out = sys.argv[1]
per = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:32, 0:32]
names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def batch(n):
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    base = rng.integers(0, 256, (n, 3, 1, 1))
    slope = rng.normal(0, 3, (n, 3, 2))
    img = base + slope[..., 0, None, None] * xx + slope[..., 1, None, None] * yy
    img = img + rng.normal(0, 12, (n, 3, 32, 32))
    img = np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)
    return np.concatenate([labels[:, None], img], axis=1).tobytes()


with tarfile.open(out, "w:gz", compresslevel=6) as tar:
    def add(name, data):
        info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    for i in range(1, 6):
        add(f"data_batch_{i}.bin", batch(per))
    add("test_batch.bin", batch(per))
    add("batches.meta.txt", ("\n".join(names) + "\n").encode())
print(out)
