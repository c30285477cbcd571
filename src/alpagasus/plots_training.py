"""Loss-curve plot of one training run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(train_log: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in train_log["steps"]]
    losses = [h["loss"] for h in train_log["steps"]]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, color="tab:blue", label="per step")
    w = max(1, len(losses) // 50)
    if w > 1:
        smooth = [sum(losses[max(0, i - w + 1):i + 1]) / len(losses[max(0, i - w + 1):i + 1])
                  for i in range(len(losses))]
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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
