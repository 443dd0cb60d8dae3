#!/usr/bin/env python3
"""scikit-learn/numpy computing what `evaluate` computes, timed.

    python3 bench/evaluate_sklearn.py IMAGES EMBEDDING [--sample N] [--repeats R] [--threads T]
    python3 bench/evaluate_sklearn.py IMAGES EMBEDDING --make-embedding   # writes a PCA-2 map

The metrics: kNN@15 accuracy train→test and on R seeded stratified hold-outs
of 10,000 points (20% of a smaller set), and neighbour preservation of the
map against the pixels for N query points (neighbours among all points).
It prints the metrics and the wall time of the computation (the tables are
read before the clock starts, as `evaluate`'s own reading is fast).
"""
import argparse, json, os, sys, time

import numpy as np
import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("embedding")
    ap.add_argument("--make-embedding", action="store_true")
    ap.add_argument("--sample", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()

    t = pq.read_table(a.images)
    meta = t.schema.metadata
    d = int(meta[b"tsimcne.height"]) * int(meta[b"tsimcne.width"]) * int(meta[b"tsimcne.channels"])
    ids = t.column("id").to_numpy()
    X = np.frombuffer(b"".join(t.column("image").to_pylist()), np.uint8).reshape(-1, d)
    y = t.column("label").to_numpy(zero_copy_only=False)
    split = np.array(t.column("split").to_pylist())
    assert (ids == np.arange(len(ids))).all()

    if a.make_embedding:
        import pyarrow as pa
        Xf = X.astype(np.float32)
        mu = Xf.mean(0)
        _, _, vt = np.linalg.svd(Xf[:: max(1, len(Xf) // 5000)] - mu, full_matrices=False)
        Z = (Xf - mu) @ vt[:2].T
        pq.write_table(pa.table({"id": pa.array(ids, pa.uint32()),
                                 "x": Z[:, 0].astype(np.float32), "y": Z[:, 1].astype(np.float32)}),
                       a.embedding)
        print(f"wrote {a.embedding}")
        return

    from threadpoolctl import threadpool_limits
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    e = pq.read_table(a.embedding)
    order = np.argsort(e.column("id").to_numpy())
    Z = np.stack([e.column("x").to_numpy(), e.column("y").to_numpy()], 1)[order]
    k = a.k
    with threadpool_limits(a.threads):
        t0 = time.perf_counter()
        out = {}
        tr, te = split == "train", split == "test"
        knn = KNeighborsClassifier(k, n_jobs=a.threads).fit(Z[tr], y[tr])
        out["train_test"] = float((knn.predict(Z[te]) == y[te]).mean())
        test_size = min(10000, len(y) // 5)
        accs = []
        for r in range(a.repeats):
            i_tr, i_te = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=r)
            knn = KNeighborsClassifier(k, n_jobs=a.threads).fit(Z[i_tr], y[i_tr])
            accs.append(float((knn.predict(Z[i_te]) == y[i_te]).mean()))
        out["holdout_mean"], out["holdout_std"] = float(np.mean(accs)), float(np.std(accs))
        q = np.random.default_rng(0).choice(len(y), min(a.sample, len(y)), replace=False)
        # k+1 neighbours, then drop the query itself.
        def neighbours(data, algorithm):
            nn = NearestNeighbors(n_neighbors=k + 1, algorithm=algorithm, n_jobs=a.threads).fit(data)
            ind = nn.kneighbors(data[q], return_distance=False)
            return [[j for j in row if j != qi][:k] for row, qi in zip(ind, q)]
        nz = neighbours(Z, "kd_tree")
        nx = neighbours(X.astype(np.float32), "brute")
        out["preservation_pixels"] = float(np.mean([len(set(a_) & set(b_)) / k for a_, b_ in zip(nz, nx)]))
        out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
