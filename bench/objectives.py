#!/usr/bin/env python3
"""Which 2-D objective could beat in-batch InfoNCE on the demo's positives?

    bench/objectives.py IMAGES.parquet FEATURES.parquet [VARIANT ...]
        [--epochs 90] [--batch 256] [--threads 2] [--map-scale S]

(the variants before the options: argparse takes no positionals after them)

Free 2-D points (no network) on the `--knn-space joint` list (k = 15) of a
pretraining, as in `bench/ceiling.py --infonce-epochs`: PCA start, Adam at
lr 0.3 annealed by a per-epoch cosine, one partner per point and epoch.
Prints one line per VARIANT with the kNN@15 of the points (ceiling.py's
hold-out draws) and the spread (standard deviation of each axis):

  infonce        the 2-D stages' loss (InfoNCE with the Cauchy kernel over
                 the batch's 2B views)
  negw:W         InfoNCE with each negative's logit raised by log W: the
                 batch's negatives stand for W times as many points
  exag:A         InfoNCE with the positive's logit weighted by A (A < 1:
                 weaker attraction, as a lower exaggeration in t-SNE; only
                 bounded with --map-scale)
  dcl            the positive left out of the denominator (decoupled)
  bank:M         InfoNCE with M more negatives from a memory bank of all
                 points (each point's last position), self and partner
                 excluded
  global         one normaliser over all pairs of the batch (t-SNE's Z)
  nce:L          noise-contrastive estimation with a learnt normaliser
                 (Damrich et al. 2023's route to t-SNE)
  perplexity:P   partners drawn by openTSNE's perplexity-P affinities in
                 the joint space instead of uniformly from the k list
  tsne:E         openTSNE of the joint graph (250 iterations at
                 exaggeration 12, then 500 at E): the reference

Default variants: all of the above at one setting each. Needs: pip install
torch openTSNE scikit-learn pyarrow numpy.
"""
import argparse
import time

import numpy as np
import torch
from sklearn.decomposition import PCA

from ceiling import joint_graph, knn_accuracy, load, tsne_of_graph, unit_centred

DEFAULT = ["infonce", "negw:20", "dcl", "bank:2048", "global", "nce:0", "perplexity:5", "tsne:1",
           "tsne:2", "tsne:4"]


def loss_fn(kind, arg, n, store):
    """The batch loss of `kind` for views `z` ([2B, 2]) whose first B rows
    are the points `i` and last B their partners `j`."""
    log_nce = torch.nn.Parameter(torch.tensor(float(arg or 0)))

    def loss(z, i, j):
        m = len(i)
        logits = -torch.log1p(torch.cdist(z, z) ** 2)  # [2B, 2B]
        logits.fill_diagonal_(-float("inf"))
        rows = torch.arange(2 * m)
        target = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)])
        if kind == "infonce":
            return torch.nn.functional.cross_entropy(logits, target)
        if kind == "negw":
            shift = torch.full_like(logits, float(np.log(float(arg))))
            shift[rows, target] = 0
            return torch.nn.functional.cross_entropy(logits + shift, target)
        if kind == "exag":
            return (torch.logsumexp(logits, 1) - float(arg) * logits[rows, target]).mean()
        if kind == "dcl":
            pos = logits[rows, target]
            neg = logits.clone()
            neg[rows, target] = -float("inf")
            return (torch.logsumexp(neg, 1) - pos).mean()
        if kind == "bank":
            k = torch.randint(0, n, (int(arg),))
            extra = -torch.log1p(torch.cdist(z, store[k]) ** 2)  # [2B, M]
            views = torch.cat([i, j])
            extra = extra.masked_fill((k[None, :] == views[:, None]) | (k[None, :] == views[target][:, None]),
                                      -float("inf"))
            return torch.nn.functional.cross_entropy(torch.cat([logits, extra], 1), target)
        if kind == "global":
            return torch.logsumexp(logits.flatten(), 0) - logits[rows, target].mean()
        if kind == "nce":
            pos = logits[rows, target]
            mask = torch.ones_like(logits, dtype=torch.bool)
            mask[rows, target] = False
            mask.fill_diagonal_(False)
            neg = logits[mask].view(2 * m, -1)
            sp = torch.nn.functional.softplus
            return sp(log_nce - pos).mean() + sp(neg - log_nce).sum(1).mean()
        raise SystemExit(f"unknown variant {kind}")

    return loss, [log_nce] if kind == "nce" else []


def fixed_scale(z, scale):
    """The stages' `--map-scale`: the views centred and scaled to RMS `scale`."""
    if not scale:
        return z
    z = z - z.mean(0)
    return z / (z.pow(2).mean() + 1e-12).sqrt() * scale


def free_points(graph, weights, init, loss_kind, arg, epochs, batch, seed, scale=0.0):
    torch.manual_seed(seed)
    g = torch.tensor(graph)
    w = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    n = g.shape[0]
    start = PCA(2, random_state=seed).fit_transform(init)
    emb = torch.nn.Parameter(torch.tensor(start / start[:, 0].std(), dtype=torch.float32))
    store = emb.detach().clone()
    loss, extra = loss_fn(loss_kind, arg, n, store)
    opt = torch.optim.Adam([emb, *extra], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        perm = torch.randperm(n)
        for s in range(n // batch):
            i = perm[s * batch:(s + 1) * batch]
            if w is None:
                col = torch.randint(0, g.shape[1], (len(i),))
            else:
                col = torch.multinomial(w[i], 1)[:, 0]
            j = g[i, col]
            value = loss(fixed_scale(torch.cat([emb[i], emb[j]]), scale), i, j)
            opt.zero_grad()
            value.backward()
            opt.step()
            with torch.no_grad():
                store[i] = emb[i]
                store[j] = emb[j]
        sched.step()
    return emb.detach().numpy()


def perplexity_graph(x, perplexity, threads, seed):
    """openTSNE's symmetric affinities as a padded neighbour list and weights."""
    from openTSNE import affinity

    p = affinity.PerplexityBasedNN(x, perplexity=perplexity, n_jobs=threads, random_state=seed).P.tocsr()
    n, width = p.shape[0], int(np.diff(p.indptr).max())
    graph, weights = np.zeros((n, width), dtype=np.int64), np.zeros((n, width))
    for r in range(n):
        s, e = p.indptr[r], p.indptr[r + 1]
        graph[r, :e - s] = p.indices[s:e]
        weights[r, :e - s] = p.data[s:e]
    return graph, weights


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("features")
    ap.add_argument("variants", nargs="*", default=DEFAULT)
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--map-scale", type=float, default=0.0,
                    help="the loss sees each batch's views at this RMS spread, as the stages' --map-scale")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _, labels, pixels, backbone, _ = load(a.images, a.features)
    graph = joint_graph(pixels, backbone, a.k)
    for variant in a.variants:
        kind, _, arg = variant.partition(":")
        t0 = time.perf_counter()
        if kind == "tsne":
            e = tsne_of_graph(graph, backbone, a.threads, a.seed, exaggeration=float(arg or 1))
        elif kind == "perplexity":
            joint = np.hstack([unit_centred(pixels), unit_centred(backbone)])
            g, w = perplexity_graph(joint, float(arg), a.threads, a.seed)
            e = free_points(g, w, backbone, "infonce", None, a.epochs, a.batch, a.seed, a.map_scale)
        else:
            e = free_points(graph, None, backbone, kind, arg, a.epochs, a.batch, a.seed, a.map_scale)
        spread = " ".join(f"{v:.1f}" for v in e.std(0))
        print(f"{variant}\tknn@15 {knn_accuracy(e, labels):.4f}\tstd {spread}\t"
              f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
