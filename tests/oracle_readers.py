#!/usr/bin/env python3
"""An independent reader for the official dataset layouts, used as an oracle.

Usage: python3 tests/oracle_readers.py SOURCE INPUT TABLE.parquet
  SOURCE  cifar10 | cifar100 | mnist | fashion-mnist
  INPUT   the archive (.tar.gz/.tar) or extracted directory, or the IDX directory

Reads INPUT with Python's tarfile/gzip and numpy, following the published
format descriptions (not our Rust code), and checks that the image table
`prep` wrote holds the same pixels (HWC), labels and splits, in the same
order. Prints one line and exits 0 on agreement.
"""
import gzip
import io
import os
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq

source, inp, table = sys.argv[1:4]


def cifar_members(path, names):
    out = {}
    if os.path.isdir(path):
        for n in names:
            # The directory holding the members, or its parent.
            for cand in (os.path.join(path, n), os.path.join(path, os.path.basename(n))):
                if os.path.isfile(cand):
                    out[n] = open(cand, "rb").read()
                    break
        return out
    with tarfile.open(path, "r:*") as tar:
        for m in tar.getmembers():
            if m.name in names:
                out[m.name] = tar.extractfile(m).read()
    return out


def cifar(dirname, train, test, label_bytes):
    names = [f"{dirname}/{n}" for n in train + test]
    members = cifar_members(inp, names)
    images, labels, coarse, splits = [], [], [], []
    for n in names:
        rec = np.frombuffer(members[n], np.uint8).reshape(-1, label_bytes + 3072)
        labels.append(rec[:, label_bytes - 1].astype(np.int64))
        coarse.append(rec[:, 0].astype(np.int64))
        # Planar R, G, B → HWC.
        images.append(rec[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        splits += ["train" if n.split("/")[1] in train else "test"] * len(rec)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(coarse), splits


def idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], ">u4").astype(np.int64)
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)


def idx_dir():
    images, labels, splits = [], [], []
    for prefix, split in (("train", "train"), ("t10k", "test")):
        found = [f for f in (f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz")
                 if os.path.isfile(os.path.join(inp, f))]
        if not found:
            continue
        im = idx(os.path.join(inp, found[0]))
        lf = found[0].replace("images-idx3", "labels-idx1")
        lab = idx(os.path.join(inp, lf))
        images.append(im[..., None])
        labels.append(lab.astype(np.int64))
        splits += [split] * len(lab)
    return np.concatenate(images), np.concatenate(labels), splits


coarse = None
if source == "cifar10":
    images, labels, _, splits = cifar("cifar-10-batches-bin",
                                      [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1)
elif source == "cifar100":
    images, labels, coarse, splits = cifar("cifar-100-binary", ["train.bin"], ["test.bin"], 2)
else:
    images, labels, splits = idx_dir()

df = pq.read_table(table).to_pandas()
ours = np.stack([np.frombuffer(b, np.uint8) for b in df["image"]]).reshape(images.shape)
assert len(df) == len(images), (len(df), len(images))
assert (ours == images).all(), "pixels differ"
assert (df["label"].to_numpy() == labels).all(), "labels differ"
assert list(df["split"]) == splits, "splits differ"
if coarse is not None:
    assert (df["coarse_label"].to_numpy() == coarse).all(), "coarse labels differ"
print(f"oracle agrees: {source}, {len(df)} images, shape {images.shape[1:]}")
