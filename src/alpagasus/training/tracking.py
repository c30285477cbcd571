"""Experiment tracking: a training's steps, its config and data identity, and later the model's
win rates, reported to Weights & Biases and/or MLflow (``training.report_to``).

- Only the main process reports (under FSDP or DDP every rank trains, one reports).
- A tracker that fails (not installed, no network, a store it cannot write) is logged once and
  dropped: it never fails or slows a training, and the other tracker goes on.
- The run ids are kept in the resume directory, so a training resumed after a kill or a Slurm
  requeue goes on in the same runs, and in ``tracking.json`` of the checkpoint directory, so
  rule winrate adds the final win rates to the run that trained the model.
- W&B is offline unless a key is there (``WANDB_API_KEY``) or ``WANDB_MODE``/``wandb_mode`` says
  otherwise: no network is needed, and ``wandb sync DIR`` uploads an offline run later. MLflow
  writes to ``mlflow_tracking_uri`` (or ``MLFLOW_TRACKING_URI``), else to a local SQLite store
  under the results directory (MLflow 3 refuses its old file store). Keys come from the environment only and are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from alpagasus.core.io import write_json

log = logging.getLogger("alpagasus.training")

TRACKERS = ("wandb", "mlflow")
RUN_IDS = "tracking.json"  # in the resume directory while training, then in the checkpoint
# Per-step fields reported as metrics (the step itself is the x axis).
STEP_METRICS = ("loss", "lr", "grad_norm", "tokens", "supervised_tokens", "time_s")


def settings(training_config: dict, results_dir: str | os.PathLike) -> dict | None:
    """What the train and winrate rules pass on: None where ``report_to`` names no tracker."""
    report_to = list(training_config["report_to"])
    if not report_to:
        return None
    tracking = training_config["tracking"]  # its defaults: config/schema.yaml
    local = Path(results_dir).resolve() / "tracking"
    return {"report_to": report_to, "project": tracking["project"], "wandb_mode": tracking["wandb_mode"],
            "wandb_dir": str(Path(tracking["wandb_dir"] or local).resolve()),
            # The environment's URI is read where the run starts, never copied here: it may hold
            # credentials, and this dict is written into the training's spec.json.
            "mlflow_tracking_uri": tracking["mlflow_tracking_uri"], "mlflow_local_store": f"sqlite:///{local / 'mlflow.db'}"}


def flat(config: dict, prefix: str = "") -> dict:
    """Nested config as flat ``a.b`` keys (MLflow's params are flat strings)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


class _WandB:
    name = "wandb"

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.run = None

    def start(self, run_name: str, config: dict, run_id: str | None) -> str:
        import wandb

        mode = self.cfg["wandb_mode"] or os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline")
        Path(self.cfg["wandb_dir"]).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.cfg["project"], name=run_name, id=run_id, resume="allow",
                              config=config, dir=self.cfg["wandb_dir"], mode=mode,
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        return self.run.id

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class _MLflow:
    name = "mlflow"

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.client = self.run_id = None

    def start(self, run_name: str, config: dict, run_id: str | None) -> str:
        uri = self.cfg["mlflow_tracking_uri"] or os.environ.get("MLFLOW_TRACKING_URI") or self.cfg["mlflow_local_store"]
        if not uri.startswith("sqlite:///"):
            return self._start(uri, run_name, config, run_id)
        # Two trainings starting side by side would both create the store's tables (MLflow's
        # migration then fails in one: "duplicate column name") and the experiment: one at a time.
        import fcntl

        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start(uri, run_name, config, run_id)

    def _start(self, uri: str, run_name: str, config: dict, run_id: str | None) -> str:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=uri)
        if run_id:
            self.run_id = self.client.get_run(run_id).info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        experiment = self.client.get_experiment_by_name(self.cfg["project"])
        if experiment is None:
            try:
                self.client.create_experiment(self.cfg["project"])
            except Exception:  # noqa: BLE001 - created meanwhile by another job (a tracking server)
                pass
            experiment = self.client.get_experiment_by_name(self.cfg["project"])
        experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        # A param is a string of at most 6,000 characters (MLflow's limit).
        params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        return self.run_id

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def summary(self, values: dict) -> None:
        self.log(values, step=0)

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


MAKERS = {"wandb": _WandB, "mlflow": _MLflow}


class Tracking:
    """The trackers a training (or a later rule) reports to; every call is safe to make."""

    def __init__(self, cfg: dict | None):
        self.active = [MAKERS[name](cfg) for name in (cfg or {}).get("report_to", [])]
        self.run_ids: dict[str, str] = {}

    def _each(self, what: str, call) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - a tracker must never fail the training
                log.warning("tracking: %s failed to %s and is dropped for this run (%s: %s)",
                            tracker.name, what, type(exc).__name__, exc)
                self.active.remove(tracker)

    def start(self, run_name: str, config: dict, run_ids: dict | None = None) -> dict:
        """Start (or, with the ids of an earlier start, resume) a run in each tracker."""
        run_ids = run_ids or {}

        def start(tracker):
            self.run_ids[tracker.name] = tracker.start(run_name, config, run_ids.get(tracker.name))

        self._each("start", start)
        return dict(self.run_ids)

    def log(self, metrics: dict, step: int) -> None:
        self._each("log", lambda t: t.log(metrics, step))

    def summary(self, values: dict) -> None:
        self._each("record the summary", lambda t: t.summary(values))

    def finish(self, failed: bool = False) -> None:
        self._each("finish", lambda t: t.finish(failed))
        self.active = []


def read_run_ids(directory: str | os.PathLike) -> dict:
    path = Path(directory) / RUN_IDS
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_ids(directory: str | os.PathLike, run_ids: dict) -> None:
    if run_ids:
        write_json(Path(directory) / RUN_IDS, run_ids)


def step_metrics(record: dict, memory_mb: dict) -> dict:
    """One optimizer step as metrics: the loss, learning rate and gradient norm, tokens/s and
    the process's memory so far."""
    out = {k: record[k] for k in STEP_METRICS if record.get(k) is not None}
    if record.get("time_s"):
        out["tokens_per_s"] = record["tokens"] / record["time_s"]
    out.update({f"memory/{k}": v for k, v in memory_mb.items()})
    return out


def winrate_metrics(rows: list[dict]) -> dict[str, dict]:
    """A win-rate table (alpagasus.evaluation.winrate rows) as each model's metrics, from its own
    side: ``winrate/vs_{opponent}/{test_set}/winning_score`` and the win, tie and lose counts."""
    from alpagasus.evaluation.stats import winning_score

    out: dict[str, dict] = {}
    for r in rows:
        n, win, tie, lose = (int(r[k]) for k in ("n", "win", "tie", "lose"))
        for model, opponent, w, l in ((r["model_a"], r["model_b"], win, lose), (r["model_b"], r["model_a"], lose, win)):
            key = f"winrate/vs_{opponent}/{r['test_set']}"
            out.setdefault(model, {}).update({f"{key}/winning_score": winning_score(w, l, n) if n else None,
                                              f"{key}/win": w, f"{key}/tie": tie, f"{key}/lose": l})
    return {m: {k: v for k, v in values.items() if v is not None} for m, values in out.items()}


def benchmark_metrics(rows: list[dict]) -> dict[str, dict]:
    """A benchmarks table (alpagasus.evaluation.benchmarks rows) as each model's metrics:
    ``benchmarks/{label}`` and ``benchmarks/{label}_stderr``."""
    return {r["model"]: {f"benchmarks/{k}": v for k, v in r.items() if k != "model" and v is not None} for r in rows}


def report_results(cfg: dict | None, checkpoint_dirs: dict[str, str], metrics: dict[str, dict]) -> None:
    """Add a rule's results (e.g. win rates) to the runs that trained each model: ``metrics``
    maps a model name (``alpagasus-7b``) to its values; ``checkpoint_dirs`` says where its run
    ids are. Models trained without tracking are skipped."""
    if not cfg:
        return
    for model, values in metrics.items():
        run_ids = read_run_ids(checkpoint_dirs.get(model, "/nonexistent"))
        if not run_ids or not values:
            continue
        tracking = Tracking({**cfg, "report_to": [n for n in cfg["report_to"] if n in run_ids]})
        tracking.start(model, {}, run_ids)
        tracking.summary(values)
        tracking.finish()
