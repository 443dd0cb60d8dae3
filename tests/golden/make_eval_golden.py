#!/usr/bin/env python3
"""Golden values from scikit-learn for `evaluate`'s neighbours and kNN vote.

Usage: python3 tests/golden/make_eval_golden.py   (needs scikit-learn, numpy, safetensors)

Writes eval_golden.safetensors next to this script: a clustered 2-D map,
u8 "pixels" (64-D) and f32 features (48-D) of the same 600 points, labels
with deliberate vote ties, a train/test mask, and what scikit-learn makes of
them: KNeighborsClassifier(15) predictions (fit on train, predict test) in
each space, and the 15 nearest neighbours of every point (itself left out).
The script checks that the votes include ties, which scikit-learn breaks
towards the smallest label. Where the 15th and 16th neighbours are equally
far (integer pixel distances tie), which one is chosen is up to the
implementation; those rows are marked and compared by distances only. CI never runs this
script; the Rust test `tests/golden.rs` of tsimcne-eval uses the file.
"""
import os

import numpy as np
from safetensors.numpy import save_file
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

HERE = os.path.dirname(os.path.abspath(__file__))
K = 15
rng = np.random.default_rng(2023)
n, classes = 600, 5
centres = rng.normal(size=(classes, 2)) * 3
lab = rng.integers(0, classes, n)
# Labels of a few points are scrambled, so votes are mixed and some tie.
mixed = rng.random(n) < 0.5
labels = np.where(mixed, rng.integers(0, classes, n), lab).astype(np.int32)
emb = (centres[lab] + rng.normal(size=(n, 2))).astype(np.float32)
pix_centres = rng.integers(40, 216, size=(classes, 64))
pix = np.clip(pix_centres[lab] + rng.integers(-40, 41, size=(n, 64)), 0, 255).astype(np.uint8)
feat = (rng.normal(size=(classes, 48))[lab] + 1.3 * rng.normal(size=(n, 48))).astype(np.float32)
is_test = np.zeros(n, np.uint8)
is_test[rng.choice(n, 120, replace=False)] = 1
tr, te = is_test == 0, is_test == 1

out = {"labels": labels, "is_test": is_test, "map": emb, "pixels": pix, "features": feat}
for name, X, algorithm in [("map", emb, "kd_tree"), ("pixels", pix, "brute"), ("features", feat, "brute")]:
    X64 = X.astype(np.float64)  # exact for the u8 and 2-D cases
    knn = KNeighborsClassifier(K, algorithm=algorithm).fit(X64[tr], labels[tr])
    pred = knn.predict(X64[te]).astype(np.int32)
    out[f"pred_{name}"] = pred
    # Votes that tie: the winner must be the smallest tied label.
    nb = knn.kneighbors(X64[te], return_distance=False)
    counts = np.stack([np.bincount(labels[tr][row], minlength=classes) for row in nb])
    ties = ((counts == counts.max(1, keepdims=True)).sum(1) > 1).sum()
    assert ties >= 3, f"{name}: only {ties} tied votes"
    # Test points whose 15th and 16th training neighbours tie: there the
    # prediction depends on how a tie is ordered, which scikit-learn leaves
    # to its partial sort, so those predictions are not compared.
    d_te = ((X64[te][:, None, :] - X64[tr][None, :, :]) ** 2).sum(-1)
    d_te.sort(1)
    out[f"pred_{name}_defined"] = (d_te[:, K - 1] != d_te[:, K]).astype(np.uint8)
    nn = NearestNeighbors(n_neighbors=K + 1, algorithm=algorithm).fit(X64)
    dist, ind = nn.kneighbors(X64)
    rows, dists, defined = [], [], []
    for i in range(n):
        keep = ind[i] != i
        rows.append(ind[i][keep][:K])
        dists.append(dist[i][keep][:K] ** 2)
        # Exact squared distances (direct sums, as evaluate computes them).
        d = ((X64 - X64[i]) ** 2).sum(1)
        d[i] = np.inf
        ds = np.sort(d)
        defined.append(ds[K - 1] != ds[K])
    out[f"nn_{name}"] = np.array(rows, np.int64)
    out[f"dist_{name}"] = np.array(dists, np.float64)
    out[f"nn_{name}_defined"] = np.array(defined, np.uint8)
    print(f"{name}: {n - sum(defined)} points with a tie at neighbour {K}")
    print(f"{name}: accuracy {np.mean(pred == labels[te]):.4f}, tied votes {ties}")

save_file(out, os.path.join(HERE, "eval_golden.safetensors"))
print("wrote eval_golden.safetensors")
