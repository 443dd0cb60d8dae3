#!/usr/bin/env python3
"""What a 2-D map could reach from a pretraining: the budget study's ceilings.

    bench/ceiling.py IMAGES.parquet FEATURES.parquet [--k 15] [--threads 2]
        [--infonce-epochs 0] [--infonce-batch 256] [--infonce-graph joint]
        [--map EMBEDDING.parquet ...]

IMAGES is an image table (prep), FEATURES the `features.parquet` a
`pretrain` run wrote for the same table. Prints one line per space or map,
each with its kNN@15 accuracy under the hold-out protocol of `evaluate`
(5 stratified hold-outs of 2,000 points, scikit-learn's KNeighborsClassifier;
labels from the image table):

- the spaces themselves: pixels (scaled to [0, 1]), the backbone features,
  the 128-D head outputs;
- t-SNE (openTSNE: 250 iterations with exaggeration 12, then 500; PCA
  initialisation) of the uniform k-nearest-neighbour graphs that
  `--knn-positives K` draws positives from: pixel neighbours, backbone
  feature neighbours, their union (`--knn-space both`), and the joint
  neighbours (`--knn-space joint`: by the mean of the pixel and feature
  cosine similarities, each space centred). A graph's
  t-SNE is about the best a 2-D map can do when its attraction comes from
  that graph;
- with `--infonce-epochs N` (needs torch): free 2-D points (no network,
  PCA initialisation, Adam, lr 0.3 annealed to 0 by a per-epoch cosine, as
  the stages' schedule) trained for N epochs with the loss of the 2-D
  stages (InfoNCE with the Cauchy kernel over the batch's 2B views),
  positives drawn per epoch from the `--infonce-graph` graph: what the loss
  itself reaches without a network in the way;
- with `--map EMBEDDING` (repeatable; needs torch), an embedding table a
  stage wrote (e.g. `finetune/embedding.parquet`): its kNN@15 under the
  same draws, its spread (the standard deviation of each axis), and its
  mean loss under the `--infonce-graph` positives, the loss the 2-D stages
  minimise, measured on the map as it is and scaled by 0.5 and 2 (20
  passes of seeded batches). The free points get the same loss line, so a
  network's map and the free points can be compared by the loss as well as
  by kNN.

The hold-out draws are scikit-learn's (random_state 0), not `evaluate`'s:
compare lines of one run, not with `evaluate`'s numbers (on one map the
mean of 5 draws moves by about ±0.008 between draw seeds).

Needs: pip install openTSNE scikit-learn pyarrow numpy (and torch for
--infonce-epochs).
"""
import argparse
import time

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors


def knn_accuracy(x, y, k=15):
    accs = []
    for tr, te in StratifiedShuffleSplit(5, test_size=2000, random_state=0).split(x, y):
        accs.append(KNeighborsClassifier(k).fit(x[tr], y[tr]).score(x[te], y[te]))
    return float(np.mean(accs))


def neighbours(x, k):
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def tsne_of_graph(graph, init, threads, seed, exaggeration=1):
    from openTSNE import TSNEEmbedding, affinity, initialization

    class Fixed(affinity.Affinities):
        def __init__(self, p):
            self.P = p

    n = graph.shape[0]
    rows = np.repeat(np.arange(n), graph.shape[1])
    p = sp.csr_matrix((np.ones(len(rows)), (rows, graph.ravel())), shape=(n, n))
    p = p + p.T
    p = p / p.sum()
    e = TSNEEmbedding(initialization.pca(init, random_state=seed), Fixed(p), n_jobs=threads,
                      random_state=seed)
    e = e.optimize(250, exaggeration=12, momentum=0.5)
    e = e.optimize(500, exaggeration=exaggeration, momentum=0.8)
    return np.asarray(e)


def batch_loss(emb, g, i):
    """The 2-D stages' loss of the batch of points `i`: each one's partner
    drawn from its row of `g`, InfoNCE with the Cauchy kernel over the 2B
    views."""
    import torch

    j = g[i, torch.randint(0, g.shape[1], (len(i),))]
    z = torch.cat([emb[i], emb[j]])
    m = len(i)
    logits = -torch.log1p(torch.cdist(z, z) ** 2)
    logits.fill_diagonal_(-float("inf"))
    target = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)])
    return torch.nn.functional.cross_entropy(logits, target)


def infonce_points(graph, init, epochs, batch, seed, threads):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    g = torch.tensor(graph)
    start = PCA(2, random_state=seed).fit_transform(init)
    emb = torch.nn.Parameter(torch.tensor(start / start[:, 0].std(), dtype=torch.float32))
    opt = torch.optim.Adam([emb], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = g.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n)
        for s in range(n // batch):
            loss = batch_loss(emb, g, perm[s * batch:(s + 1) * batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return emb.detach().numpy()


def infonce_loss(emb, graph, batch, seed, threads, passes=20):
    """The mean loss of the 2-D stages for the fixed points `emb` over
    `passes` passes of seeded batches, positives drawn from `graph`."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    g = torch.tensor(graph)
    e = torch.tensor(emb, dtype=torch.float32)
    n = g.shape[0]
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(passes):
            perm = torch.randperm(n)
            for s in range(n // batch):
                total += batch_loss(e, g, perm[s * batch:(s + 1) * batch]).item()
                count += 1
    return total / count


def unit_centred(x):
    x = x - x.mean(0)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def rows_of(table, ids, error):
    """The rows of `table` whose `id` column gives `ids` in order; exits
    with `error` when some id is missing."""
    tids = table.column("id").to_numpy()
    order = np.argsort(tids)
    pos = np.minimum(np.searchsorted(tids[order], ids), len(order) - 1)
    rows = order[pos]
    if not (tids[rows] == ids).all():
        raise SystemExit(error)
    return rows


def load(images, features):
    """The image table's ids, labels and pixels (scaled to [0, 1]) and the
    pretraining's backbone features and head outputs in the same row order."""
    t = pq.read_table(images)
    ids = t.column("id").to_numpy()
    labels = t.column("label").to_numpy()
    pixels = np.stack([np.frombuffer(b, dtype=np.uint8) for b in t.column("image").to_pylist()])
    pixels = pixels.astype(np.float32) / 255.0
    f = pq.read_table(features)
    rows = rows_of(f, ids, f"{features}: its ids are not those of {images}")
    backbone = np.stack(f.column("backbone").to_pylist()).astype(np.float32)[rows]
    head = np.stack(f.column("head").to_pylist()).astype(np.float32)[rows]
    return ids, labels, pixels, backbone, head


def joint_graph(pixels, backbone, k):
    """The `--knn-space joint` list: neighbours by the mean of the pixel and
    feature cosine similarities, each space centred."""
    return neighbours(np.hstack([unit_centred(pixels), unit_centred(backbone)]), k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("features")
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--infonce-epochs", type=int, default=0)
    ap.add_argument("--infonce-batch", type=int, default=256)
    ap.add_argument("--infonce-graph", default="joint",
                    choices=["pixels", "features", "both", "joint"])
    ap.add_argument("--map", action="append", default=[], metavar="EMBEDDING",
                    help="an embedding table to score by kNN and by the loss (repeatable)")
    a = ap.parse_args()

    ids, labels, pixels, backbone, head = load(a.images, a.features)

    def line(name, x, t0):
        print(f"{name}\tknn@15 {knn_accuracy(x, labels):.4f}\t{time.perf_counter() - t0:.0f} s",
              flush=True)

    for name, x in [("pixels", pixels), ("backbone", backbone), ("head", head)]:
        line(name, x, time.perf_counter())
    graphs = {"pixels": neighbours(pixels, a.k), "features": neighbours(backbone, a.k)}
    graphs["both"] = np.hstack([graphs["pixels"], graphs["features"]])
    graphs["joint"] = joint_graph(pixels, backbone, a.k)
    for name, g in graphs.items():
        t0 = time.perf_counter()
        init = pixels if name == "pixels" else backbone
        line(f"t-SNE of the {name} graph (k {a.k})", tsne_of_graph(g, init, a.threads, a.seed), t0)
    if a.infonce_epochs > 0:
        t0 = time.perf_counter()
        e = infonce_points(graphs[a.infonce_graph], backbone, a.infonce_epochs, a.infonce_batch, a.seed,
                           a.threads)
        line(f"free 2-D points, InfoNCE on the {a.infonce_graph} graph, {a.infonce_epochs} epochs, "
             f"batch {a.infonce_batch}", e, t0)
        maps = [("free 2-D points", e)]
    else:
        maps = []
    for path in a.map:
        m = pq.read_table(path)
        mrows = rows_of(m, ids, f"{path}: its ids are not those of {a.images}")
        x = np.c_[m.column("x").to_numpy(), m.column("y").to_numpy()].astype(np.float32)[mrows]
        line(f"map {path}", x, time.perf_counter())
        maps.append((path, x))
    for name, x in maps:
        t0 = time.perf_counter()
        losses = "  ".join(
            f"x{s:g} {infonce_loss(x * s, graphs[a.infonce_graph], a.infonce_batch, a.seed, a.threads):.4f}"
            for s in (0.5, 1, 2))
        spread = " ".join(f"{v:.1f}" for v in x.std(0))
        print(f"loss of {name} on the {a.infonce_graph} graph\t{losses}\tstd {spread}\t"
              f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
