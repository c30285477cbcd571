"""Figures people look at. Agg backend: no display on a cluster node or in CI."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alpagasus.core.io import atomic_path  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def score_histogram(summary: dict, path: str | Path, title: str = "Judge scores of the training data") -> None:
    """Counts per score, the kept ones highlighted: the paper's rating-distribution figure."""
    # The paper's 0.5 grid; finer scores (the verifier's) go to the step below them.
    grid: dict[float, int] = {}
    for score, n in summary["score_counts"].items():
        step = min(5.0, int(float(score) * 2) / 2)
        grid[step] = grid.get(step, 0) + n
    rule = summary["rule"]
    xs = sorted(grid)
    ys = [grid[x] for x in xs]
    fig, ax = plt.subplots(figsize=(7, 4))
    if rule.get("method") == "threshold" and rule.get("threshold") is not None:
        colors = ["tab:green" if x >= rule["threshold"] else "tab:gray" for x in xs]
        ax.axvline(rule["threshold"] - 0.25, color="tab:red", ls="--", lw=1,
                   label=f"threshold {rule['threshold']:g}: {summary['kept']:,} kept")
        ax.legend(loc="upper left")
    else:
        colors = ["tab:blue"] * len(xs)
    bars = ax.bar(xs, ys, width=0.4, color=colors)
    for bar, y in zip(bars, ys):
        ax.annotate(f"{y:,}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=8)
    unscored = summary.get("unscored", 0)
    ax.set_xlabel("score (0-5, in steps of 0.5)")
    ax.set_xticks([x / 2 for x in range(11)])
    ax.set_ylabel("records")
    ax.set_title(f"{title}\n{summary['records']:,} records, {unscored:,} without a score")
    _save(fig, path)


# The judge-agreement figure: a confusion heatmap per pair of judges, and the kept sets'
# precision, recall and Jaccard against each released selection.
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


def _smooth(losses: list[float]) -> tuple[list[float], int]:
    """The trailing mean over ~1/50 of the run, and its window (1: the losses as they are)."""
    w = max(1, len(losses) // 50)
    if w == 1:
        return list(losses), 1
    return [sum(losses[max(0, i - w + 1):i + 1]) / len(losses[max(0, i - w + 1):i + 1])
            for i in range(len(losses))], w


def plot_loss_curve(train_log: dict, path: str | Path) -> None:
    """The loss curve of one training run (the report overlays the variants: loss_curves)."""
    steps = [h["step"] for h in train_log["steps"]]
    losses = [h["loss"] for h in train_log["steps"]]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, color="tab:blue", label="per step")
    smooth, w = _smooth(losses)
    if w > 1:
        ax.plot(steps, smooth, lw=1.4, color="tab:blue", label=f"mean of {w}")
    for s in train_log.get("resumed_from_steps", []):
        ax.axvline(s, color="tab:red", lw=0.8, ls="--")
    name = "-".join(x for x in (train_log.get("variant"), train_log.get("size")) if x)
    ax.set_title(f"{name}: loss on response tokens")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def loss_figure(train_logs: list[dict], title: str):
    """The figure of ``loss_curves``: one line per run, each its trailing mean (the per-step
    losses of several runs drawn over each other are noise; each run's own plot has them)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    windows = set()
    for log in train_logs:
        steps = [h["step"] for h in log["steps"]]
        smooth, w = _smooth([h["loss"] for h in log["steps"]])
        windows.add(w)
        ax.plot(steps, smooth, lw=1.5, label=log.get("variant") or "?")
    if not train_logs:
        ax.text(0.5, 0.5, "no training run of this size", ha="center", va="center", transform=ax.transAxes)
    means = " or ".join(f"{w}" for w in sorted(windows))
    ax.set_title(title + (f"\neach point the mean of the last {means} steps" if windows - {1} else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    if train_logs:
        ax.legend(title="trained on", loc="upper right", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def loss_curves(train_logs: list[dict], path: str | Path, title: str = "Training loss on response tokens") -> None:
    """The variants of one size in one chart, so their curves can be compared."""
    _save(loss_figure(train_logs, title), path)


def _pooled(rows: list[dict]) -> list[dict]:
    """A harness's rows over every test set: its pooled rows, or its only test set's."""
    pooled = [r for r in rows if r["test_set"] == "pooled"]
    return pooled or rows


def _num(x):
    return None if x in (None, "") else float(x)


def selectors_plot(rows: list[dict], path: str | Path, title: str) -> None:
    """Winning score with its 95% interval per selector (pooled over test sets and seeds), one
    marker per opponent, and the length-controlled score beside it (hollow)."""
    rows = _pooled(rows)
    selectors = list(dict.fromkeys(r["selector"] for r in rows))
    opponents = list(dict.fromkeys(r["opponent"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.5 * len(selectors) * max(1, len(opponents))))
    colors = dict(zip(opponents, ["tab:blue", "tab:orange", "tab:green", "tab:purple"]))
    step = 0.8 / max(1, len(opponents))
    for j, opp in enumerate(opponents):
        for i, sel in enumerate(selectors):
            r = next((r for r in rows if r["selector"] == sel and r["opponent"] == opp), None)
            if r is None or _num(r["winning_score"]) is None:
                continue
            y = i + (j - (len(opponents) - 1) / 2) * step
            ws, lo, hi = _num(r["winning_score"]), _num(r["ci_low"]), _num(r["ci_high"])
            ax.errorbar([ws], [y], xerr=[[ws - lo], [hi - ws]], fmt="o", color=colors[opp], capsize=3,
                        label=f"vs {opp}" if i == 0 else None)
            lc = _num(r.get("lc_winning_score"))
            if lc is not None:
                ax.plot([lc], [y], marker="D", mfc="none", color=colors[opp], ls="none",
                        label=f"vs {opp}, length-controlled" if i == 0 else None)
    ax.axvline(1.0, color="gray", ls="--", lw=1)
    ax.set_yticks(range(len(selectors)), [f"{s} ({next(r['kept'] for r in rows if r['selector'] == s)})"
                                          for s in selectors])
    ax.invert_yaxis()
    ax.set_xlabel("winning score (1 = parity) with 95% bootstrap interval; hollow: length-controlled")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def data_size_plot(rows: list[dict], path: str | Path, title: str) -> None:
    """The paper's Fig. 1: winning score against the full set by the number of records kept."""
    rows = sorted(_pooled(rows), key=lambda r: int(r["kept"]))
    xs = [int(r["kept"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ws = [_num(r["winning_score"]) for r in rows]
    ok = [i for i, w in enumerate(ws) if w is not None]
    ax.errorbar([xs[i] for i in ok], [ws[i] for i in ok],
                yerr=[[ws[i] - _num(rows[i]["ci_low"]) for i in ok], [_num(rows[i]["ci_high"]) - ws[i] for i in ok]],
                fmt="o-", capsize=3, label="winning score vs the full set")
    lc = [(xs[i], _num(rows[i].get("lc_winning_score"))) for i in ok if _num(rows[i].get("lc_winning_score")) is not None]
    if lc:
        ax.plot(*zip(*lc), "D--", mfc="none", label="length-controlled")
    for i in ok:
        ax.annotate(rows[i]["selector"], (xs[i], ws[i]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_xlabel("records kept")
    ax.set_ylabel("winning score (1 = parity)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_benchmarks(rows: list[dict], labels: list[str], path: str | Path,
                    title: str = "Benchmarks (lm-evaluation-harness)") -> None:
    """The benchmarks table as grouped bars: a group per task, a bar per model, with the
    standard error lm-eval reports."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(labels) * max(1, len(rows)) / 2 + 2), 4))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(labels))]
        ys = [100 * float(r[t]) for t in labels]
        err = [0.0 if r.get(f"{t}_stderr") in (None, "") else 100 * float(r[f"{t}_stderr"]) for t in labels]
        bars = ax.bar(xs, ys, width, yerr=err, capsize=3, label=r["model"])
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("score (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
