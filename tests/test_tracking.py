"""Experiment tracking (training.report_to): a real tiny training reported to an MLflow SQLite
store and an offline W&B run, both read back with their own clients; a resumed training goes on
in the same runs; a tracker that fails never fails the training; the win rates reach the runs
through snakemake. Needs the `tracking` extra (wandb, mlflow-skinny)."""
import json
import logging
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alpagasus.core.config import load
from alpagasus.data.miniature import MINIATURE_TEMPLATE, make_records
from alpagasus.training import TrainSpec, train
from alpagasus.training import loop as training_loop
from alpagasus.training import tracking as tr

TINY = {"base_model": None, "tokenizer": "char",
        "model_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "tie_word_embeddings": True},
        "max_steps": 10, "learning_rate": 3e-3, "global_batch_size": 4, "per_device_batch_size": 4,
        "max_length": 64, "save_every_steps": 5}


def needs(module):
    pytest.importorskip(module, reason=f"needs the tracking extra: pip install -e '.[tracking]' ({module})")


def settings_for(tmp_path, report_to, **tracking):
    cfg = load(REPO / "config" / "config.yaml")["training"]
    cfg = {**cfg, "report_to": report_to, "tracking": {**cfg["tracking"], **tracking}}
    return tr.settings(cfg, tmp_path / "results")


def spec_for(tmp_path, data, tracking, name="alpagasus"):
    return TrainSpec(data=str(data), output=str(tmp_path / "checkpoints" / f"{name}-tiny"), size=TINY,
                     size_name="tiny", variant=name, template=MINIATURE_TEMPLATE, seed=7, threads=1,
                     progress=False, tracking=tracking)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps(make_records(40, 0.0, seed=3)))
    return path


def mlflow_history(uri, run_id, key):
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def wandb_records(wandb_dir, run_id):
    """Each offline run directory of ``run_id`` in the order written (the training's, then one
    per later rule that reported to it): (history rows, summary with config and state), as
    W&B's own inspector of .wandb transaction logs prints them (`wandb leet inspect --json`)."""
    import shutil
    import subprocess

    paths = sorted(Path(wandb_dir).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    wandb_cli = shutil.which("wandb") or pytest.skip("the wandb command is not on PATH")

    def inspect(path, *args):
        proc = subprocess.run([wandb_cli, "leet", "inspect", "--json", *args, str(path)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    out = []
    for path in paths:
        records = [json.loads(line) for line in inspect(path).splitlines() if line.strip()]
        out.append(([r["history"]["item"] for r in records if r["type"] == "history"],
                    json.loads(inspect(path, "--summary"))))
    return out


@pytest.mark.slow
def test_a_resumed_training_goes_on_in_the_same_run(tmp_path, data, monkeypatch):
    needs("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = settings_for(tmp_path, ["mlflow"])
    spec = spec_for(tmp_path, data, cfg)
    real_step = training_loop.train_step

    def dies_at_step_8(run, step):
        if step == 7:
            raise RuntimeError("node lost")
        return real_step(run, step)

    monkeypatch.setattr(training_loop, "train_step", dies_at_step_8)
    with pytest.raises(RuntimeError, match="node lost"):
        train(spec)
    first = tr.read_run_ids(spec.resolved_work_dir())
    monkeypatch.setattr(training_loop, "train_step", real_step)
    log = train(spec)
    assert log["resumed_from_steps"] == [5]
    assert tr.read_run_ids(spec.output) == first  # one run, not one per attempt
    history = mlflow_history(cfg["mlflow_local_store"], first["mlflow"], "loss")
    assert sorted({step for step, _ in history}) == list(range(1, 11))
    # Steps 6 and 7 ran twice (before the loss and after the resume) and agree.
    by_step = {}
    for step, value in history:
        by_step.setdefault(step, []).append(value)
    assert len(by_step[6]) == 2 and by_step[6][0] == pytest.approx(by_step[6][1], rel=1e-5)


def test_a_tracker_that_fails_is_dropped_and_the_training_goes_on(tmp_path, data, monkeypatch, caplog):
    class Broken:
        name = "broken"

        def __init__(self, cfg):
            self.calls = 0

        def start(self, *a):
            return "id-1"

        def log(self, metrics, step):
            raise ConnectionError("tracking server unreachable")

        def finish(self, failed=False):
            raise AssertionError("a dropped tracker is not called again")

    monkeypatch.setitem(tr.MAKERS, "broken", Broken)
    cfg = {"report_to": ["broken"]}
    with caplog.at_level(logging.WARNING, logger="alpagasus.training"):
        log = train(spec_for(tmp_path, data, cfg))
    assert len(log["steps"]) == 10 and (Path(spec_for(tmp_path, data, cfg).output) / "config.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "tracking" in r.getMessage()]
    assert len(warnings) == 1 and "broken failed to log" in warnings[0] and "unreachable" in warnings[0]


def test_no_tracker_configured_starts_nothing_and_writes_no_ids(tmp_path, data):
    cfg = load(REPO / "config" / "config.yaml")["training"]
    assert cfg["report_to"] == [] and tr.settings(cfg, tmp_path) is None
    spec = spec_for(tmp_path, data, None)
    train(spec)
    assert not (Path(spec.output) / tr.RUN_IDS).exists()


def test_the_win_rates_are_each_models_own_side():
    rows = [{"model_a": "alpagasus", "model_b": "alpaca", "test_set": "vicuna", "n": 10, "win": 6, "tie": 3, "lose": 1},
            {"model_a": "alpagasus", "model_b": "alpaca", "test_set": "pooled", "n": 0, "win": 0, "tie": 0, "lose": 0}]
    m = tr.winrate_metrics(rows)
    assert m["alpagasus"]["winrate/vs_alpaca/vicuna/winning_score"] == pytest.approx(1.5)
    assert m["alpaca"]["winrate/vs_alpagasus/vicuna/winning_score"] == pytest.approx(0.5)
    assert (m["alpaca"]["winrate/vs_alpagasus/vicuna/win"], m["alpaca"]["winrate/vs_alpagasus/vicuna/lose"]) == (1, 6)
    assert "winrate/vs_alpaca/pooled/winning_score" not in m["alpagasus"]  # no parsed items: no score


def test_an_environment_uri_is_never_written_into_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:s3cret@mlflow.example.org")
    cfg = settings_for(tmp_path, ["mlflow"])
    assert "s3cret" not in json.dumps(cfg)  # the settings go into the training's spec.json


@pytest.mark.slow
def test_trainings_report_steps_config_and_win_rates_to_mlflow_and_wandb_offline(tmp_path, small_dag):
    """Through snakemake (conftest.small_dag, 200 records, 4 steps): two trainings side by side
    into one MLflow store (read back with MlflowClient) and offline W&B runs (read back with W&B's
    own inspector), then rule winrate adds each model's win rates to its run."""
    needs("mlflow")
    needs("wandb")
    from mlflow import MlflowClient
    from conftest import small_dag_args, small_dag_config
    from test_workflow import snakemake

    work, _, trackers = small_dag
    assert trackers == ["mlflow", "wandb"], trackers
    assert small_dag_config()["training"]["sizes"]["tiny"]["max_steps"] == 4
    res = work / "results"
    uri = f"sqlite:///{res / 'tracking' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    metrics = {}
    for model, opponent in (("alpagasus", "random"), ("random", "alpagasus")):
        ckpt = res / "checkpoints" / f"{model}-tiny"
        log = json.loads((ckpt / "train_log.json").read_text())
        ids = tr.read_run_ids(ckpt)
        assert set(ids) == {"mlflow", "wandb"}, (model, (res / "logs" / "train" / f"{model}-tiny.log").read_text()[-2000:])
        # MLflow: every step's loss, lr and tokens/s; the config with the data's sha256.
        assert mlflow_history(uri, ids["mlflow"], "loss") == [(s["step"], pytest.approx(s["loss"])) for s in log["steps"]]
        assert [v for _, v in mlflow_history(uri, ids["mlflow"], "tokens_per_s")] == pytest.approx(
            [s["tokens"] / s["time_s"] for s in log["steps"]])
        assert all(v > 0 for _, v in mlflow_history(uri, ids["mlflow"], "memory/rss_mb"))
        run = client.get_run(ids["mlflow"])
        assert run.info.run_name == f"{model}-tiny" and run.info.status == "FINISHED"
        assert run.data.params["data_sha256"] == log["data_sha256"] and run.data.params["variant"] == model
        assert json.loads(run.data.params["hyperparameters.max_steps"]) == 4
        assert run.data.metrics["final/final_loss"] == pytest.approx(log["final_loss"])
        metrics[model] = run.data.metrics
        assert 0 <= metrics[model][f"winrate/vs_{opponent}/mini/winning_score"] <= 2
        # W&B: offline (no key, no network), the run's own records.
        (history, summary), (_, results) = wandb_records(res / "tracking", ids["wandb"])
        steps = [h for h in history if "loss" in h]
        assert [h["_step"] for h in steps] == [1, 2, 3, 4]
        assert [h["loss"] for h in steps] == pytest.approx([s["loss"] for s in log["steps"]])
        assert summary["state"] == "finished" and summary["name"] == f"{model}-tiny"
        assert summary["project"] == "alpagasus" and summary["config"]["data_sha256"] == log["data_sha256"]
        # The win rates: the same run id, offline a directory of its own (wandb sync takes both).
        assert results["run_id"] == ids["wandb"]
        assert results["summary"][f"winrate/vs_{opponent}/mini/winning_score"] == pytest.approx(
            metrics[model][f"winrate/vs_{opponent}/mini/winning_score"])
    # Both sides of one comparison: the scores sum to 2.
    assert (metrics["alpagasus"]["winrate/vs_random/mini/winning_score"]
            + metrics["random"]["winrate/vs_alpagasus/mini/winning_score"]) == pytest.approx(2)
    # Reporting is not part of a training's identity: switching it off reruns nothing.
    # (The same DAG with report_to [], in an overlay of this test's own: the shared run stays as it is.)
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(small_dag_config(report_to=[])))
    dry = snakemake(work, "-n", *small_dag_args(tmp_path))
    assert "Nothing to be done" in dry.stdout + dry.stderr
