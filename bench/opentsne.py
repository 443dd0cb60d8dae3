#!/usr/bin/env python3
"""openTSNE on the pixels of an image table, for comparison with t-SimCNE.

    bench/opentsne.py IMAGES.parquet OUT.parquet [--threads 2] [--seed 0]

Writes the 2-D t-SNE map as an embedding table (`id`, `x`, `y`) that our
`evaluate` reads, so both maps are scored by the same code and protocol:

    target/release/evaluate --embedding OUT.parquet --images IMAGES.parquet \
        --reference pixels --out DIR

openTSNE's defaults (perplexity 30, PCA initialisation, FFT gradients) on
the raw pixels scaled to [0, 1]. Prints the wall time of the t-SNE itself.
Needs: pip install openTSNE pyarrow numpy.
"""
import argparse
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from openTSNE import TSNE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t = pq.read_table(a.images)
    ids = t.column("id").to_numpy()
    pixels = np.stack([np.frombuffer(b, dtype=np.uint8) for b in t.column("image").to_pylist()])
    x = pixels.astype(np.float32) / 255.0
    t0 = time.perf_counter()
    y = TSNE(n_jobs=a.threads, random_state=a.seed).fit(x)
    secs = time.perf_counter() - t0
    y = np.asarray(y, dtype=np.float32)
    out = pa.table({"id": pa.array(ids), "x": pa.array(y[:, 0]), "y": pa.array(y[:, 1])})
    pq.write_table(out, a.out)
    print(f"opentsne {len(ids)} points {secs:.1f} s")


if __name__ == "__main__":
    main()
