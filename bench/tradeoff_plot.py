#!/usr/bin/env python3
"""Draw bench/tradeoff.sh's table: minutes of training against kNN@15.

    bench/tradeoff_plot.py TRADEOFF.tsv OUT.png

One point per map (the mean of evaluate seeds 0-3, with the lowest and
highest seed as the error bar; labelled with its fine-tuning epochs), a
line per pretraining length and frozen stages through its fine-tuning
lengths, and openTSNE's mean as a horizontal band (its seeds'
range) where the table has its row. Needs: pip install matplotlib.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    path, out = sys.argv[1], sys.argv[2]
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    seeds = ["seed0", "seed1", "seed2", "seed3"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    tsne = [r for r in rows if r["pretrain"] == "opentsne"]
    for r in tsne:
        lo = min(float(r[s]) for s in seeds)
        hi = max(float(r[s]) for s in seeds)
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.axhline(float(r["mean"]), color="0.4", ls="--", lw=1,
                   label=f"openTSNE of the pixels ({float(r['train_s']):.0f} s)")
    maps = [r for r in rows if r["pretrain"] != "opentsne"]
    groups = sorted({(r["pretrain"], r["freeze"]) for r in maps}, key=lambda g: (-int(g[0]), g[1]))
    for pre, freeze in groups:
        pts = sorted((r for r in maps if (r["pretrain"], r["freeze"]) == (pre, freeze)),
                     key=lambda r: float(r["train_s"]))
        x = [float(r["train_s"]) / 60 for r in pts]
        y = [float(r["mean"]) for r in pts]
        lo = [y[i] - min(float(r[s]) for s in seeds) for i, r in enumerate(pts)]
        hi = [max(float(r[s]) for s in seeds) - y[i] for i, r in enumerate(pts)]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"pretrain {pre}, finetune " + "/".join(r["finetune"] for r in pts)
                    + f" epochs, {freeze} stages frozen")
        for xi, yi, r in zip(x, y, pts):
            ax.annotate(r["finetune"], (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("training minutes (pretrain + project + finetune, 2 threads)")
    ax.set_ylabel("kNN@15, hold-out (mean of seeds 0-3)")
    ax.set_title("make demo's preset: minutes against the map's kNN@15")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
