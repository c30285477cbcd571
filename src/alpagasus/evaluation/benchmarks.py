"""Standard benchmarks of a checkpoint through EleutherAI's lm-evaluation-harness.

The paper reports MMLU (5-shot), BBH (3-shot), DROP (3-shot) and HumanEval (0-shot) as
InstructEval ran them (``evaluation.benchmarks`` in config/config.yaml; docs/evaluation.md says
where lm-eval's task versions differ). Each checkpoint is loaded once into lm-eval's HFLM and
evaluated task by task through ``lm_eval.simple_evaluate``, each task with its own shot count;
the merged results keep lm-eval's own layout (``results``, ``versions``, ``n-shot``,
``configs``, ``lm_eval_version``, ...) so lm-eval's tools read them. A task's data is lm-eval's
business: real tasks download from the Hub (on the cluster), a local task (a YAML under
``include_path``) reads a local file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from alpagasus.core.io import atomic_open
from alpagasus.evaluation.generation import default_device, default_dtype

log = logging.getLogger("alpagasus.evaluation.benchmarks")

# The per-run keys of lm-eval's results that hold one entry per task.
PER_TASK_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                 "n-samples")


def task_manager(include_path: str | None, tasks: list[dict] = ()):
    """lm-eval's TaskManager. Where every task named is a plain task under ``include_path``, one
    over that folder alone: indexing lm-eval's own ~15k task files takes ~9 s a job (measured),
    the folder well under one. A group, or a task not found there, gets the whole index."""
    from lm_eval.tasks import TaskManager

    if include_path and tasks:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        entries = [local.task_index.get(t["task"]) for t in tasks]
        if all(e is not None and getattr(e.kind, "name", "") == "TASK" for e in entries):
            return local
    return TaskManager(include_path=str(include_path) if include_path else None)


def check_tasks(tasks: list[dict], include_path: str | None, manager=None) -> None:
    """Every named task exists in lm-eval (or under include_path): one error naming them all."""
    manager = manager or task_manager(include_path, tasks)
    known = set(manager.all_tasks)
    missing = [t["task"] for t in tasks if t["task"] not in known]
    if missing:
        where = f" nor under evaluation.benchmarks.include_path ({include_path})" if include_path else ""
        raise ValueError(f"evaluation.benchmarks.tasks: {', '.join(missing)}: not an lm-eval task{where}")


def merge_results(runs: list[dict]) -> dict:
    """One results dict of several simple_evaluate runs (one per task): the per-task mappings
    joined, the run-level keys (config, versions of the harness and libraries, date) of the first."""
    merged = dict(runs[0])
    for key in PER_TASK_KEYS:
        joined: dict = {}
        for run in runs:
            joined.update(run.get(key) or {})
        if joined or key in merged:
            merged[key] = joined
    merged["total_evaluation_time_seconds"] = sum(float(r.get("total_evaluation_time_seconds") or 0) for r in runs)
    return merged


def run_benchmarks(checkpoint: str | Path, output: str | Path, *, tasks: list[dict], include_path: str | None = None,
                   batch_size: int | str = "auto", limit: float | None = None, device: str | None = None,
                   dtype: str | None = None, bootstrap_iters: int = 100000, allow_code_execution: bool = False,
                   seed: int = 0, model_name: str | None = None) -> dict:
    """Evaluate one checkpoint (a Hugging Face model directory) on ``tasks`` and write lm-eval's
    results, merged over the tasks, to ``output`` (atomically)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable

    if not tasks:
        raise ValueError("evaluation.benchmarks.tasks is empty: nothing to evaluate")
    if allow_code_execution:
        # HumanEval's metric (HF evaluate's code_eval) runs the model's code only with this set.
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    manager = task_manager(include_path, tasks)
    check_tasks(tasks, include_path, manager)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    log.info("lm-eval %s on %s (%s, %s): %s", lm_eval.__version__, checkpoint, device, dtype,
             ", ".join(f"{t['task']} ({t['num_fewshot'] if t['num_fewshot'] is not None else 'own'}-shot)"
                       for t in tasks))
    lm = HFLM(pretrained=str(checkpoint), device=device, dtype=dtype, batch_size=batch_size)
    runs = []
    for t in tasks:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=[t["task"]], num_fewshot=t["num_fewshot"], task_manager=manager, limit=limit,
            log_samples=False, bootstrap_iters=bootstrap_iters, confirm_run_unsafe_code=allow_code_execution,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
        if res is None:  # not rank 0 (lm-eval's data parallelism): rank 0 writes
            return {}
        runs.append(res)
    merged = merge_results(runs)
    # Where the model came from (the checkpoint's path is this run's; its name is the table's row).
    merged["config"]["model"] = model_name or str(checkpoint)
    merged["alpagasus"] = {"checkpoint": str(checkpoint), "model": model_name, "tasks": tasks, "limit": limit}
    with atomic_open(output) as fh:
        fh.write(json.dumps(merged, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
    return merged


def task_score(results: dict, task: dict, source: str = "") -> tuple[float, float | None, str]:
    """(score, stderr, metric key) of one configured task in lm-eval's results. ``task["metric"]``
    names the metric (``acc``, or with its filter ``exact_match,get-answer``); null: the task's
    first reported metric."""
    name = task["task"]
    row = (results.get("results") or {}).get(name)
    if row is None:
        raise ValueError(f"{source}: no results for task {name!r} (has: {', '.join(results.get('results') or {})})")
    keys = [k for k in row if "," in k and "_stderr" not in k]
    want = task.get("metric")
    if want:
        keys = [k for k in keys if k == want or k.split(",")[0] == want]
    if not keys:
        raise ValueError(f"{source}: task {name!r} reports no metric {want!r} (has: {', '.join(row)})")
    key = keys[0]
    metric, _, filt = key.partition(",")
    stderr = row.get(f"{metric}_stderr,{filt}")
    return float(row[key]), (float(stderr) if isinstance(stderr, (int, float)) else None), key


def task_label(task: dict) -> str:
    return task.get("label") or task["task"]


def benchmarks_table(files: list[tuple[str, str | Path]], tasks: list[dict]) -> list[dict]:
    """The paper's table: a row per model, a column per task (the configured metric, a fraction
    as lm-eval reports it) and its standard error, plus the shot counts the run used."""
    rows = []
    for model, path in files:
        results = json.loads(Path(path).read_text())
        row: dict = {"model": model}
        for t in tasks:
            score, stderr, _ = task_score(results, t, str(path))
            label = task_label(t)
            row[label] = round(score, 4)
            row[f"{label}_stderr"] = None if stderr is None else round(stderr, 4)
        rows.append(row)
    return rows


def table_columns(tasks: list[dict]) -> list[str]:
    return ["model", *(c for t in tasks for c in (task_label(t), f"{task_label(t)}_stderr"))]


def write_benchmarks_table(files: list[tuple[str, str | Path]], tasks: list[dict], output: str | Path,
                           plot: str | Path | None = None) -> list[dict]:
    rows = benchmarks_table(files, tasks)
    with atomic_open(output, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=table_columns(tasks))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    if plot:
        from alpagasus.reporting.plots import plot_benchmarks

        plot_benchmarks(rows, [task_label(t) for t in tasks], plot)
    return rows

