"""The judge-agreement figure: a confusion heatmap per pair of judges, and the kept sets'
precision, recall and Jaccard against each released selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import _save, plt


def agreement_figure(result: dict, path: str | Path) -> None:
    pairs = result["pairs"][:4]  # more pairs are in the JSON; four heatmaps stay legible
    rel_rows = [(rel, judge, o) for rel, r in result["releases"].items() for judge, o in r["by_judge"].items()]
    panels = len(pairs) + (1 if rel_rows else 0)
    fig, axes = plt.subplots(1, max(1, panels), figsize=(5.2 * max(1, panels), 4.6), squeeze=False)
    axes = axes[0]
    for ax, p in zip(axes, pairs):
        conf = p["confusion_grid_0_5"]
        m = np.array(conf["matrix"])
        used = [i for i in range(len(conf["labels"])) if m[i, :].sum() or m[:, i].sum()] or [0]
        lo, hi = min(used), max(used) + 1
        sub = m[lo:hi, lo:hi]
        ax.imshow(sub, cmap="Blues")
        labels = conf["labels"][lo:hi]
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), v in np.ndenumerate(sub):
            if v:
                ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=7,
                        color="white" if v > sub.max() / 2 else "black")
        ax.set_xlabel(p["judge_b"])
        ax.set_ylabel(p["judge_a"])
        kappa = p["kappa_quadratic_grid_0_5"]
        rho = p["spearman"]
        ax.set_title(f"{p['judge_a']} vs {p['judge_b']}\nSpearman {'n/a' if rho is None else f'{rho:.3f}'}, "
                     f"quadratic kappa {'n/a' if kappa is None else f'{kappa:.3f}'}", fontsize=9)
    if rel_rows:
        ax = axes[len(pairs)]
        names = [f"{j}\nvs {rel}" for rel, j, _ in rel_rows]
        x = np.arange(len(rel_rows))
        for k, (metric, color) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"),
                                             ("jaccard", "tab:green"))):
            ax.bar(x + (k - 1) * 0.27, [o[metric] or 0 for _, _, o in rel_rows], width=0.27, color=color, label=metric)
        ax.set_xticks(x, names, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title("kept set vs released selections", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    if not panels:
        axes[0].text(0.5, 0.5, "nothing to compare", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle(f"Judge agreement ({result['score_field']}, {result['records']:,} records)", fontsize=10)
    _save(fig, path)
