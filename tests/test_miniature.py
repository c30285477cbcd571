"""The README's main job, `snakemake --cores 2 --configfile config/smoke.yaml`, end to end:
data, rating, selection, three tiny models trained on CPU, their answers, pairwise judging in
both orders, the win-rate table and the report. Slow (minutes), so it runs once a session
(conftest.miniature_run) and the assertions of every stage share it."""
import csv
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from alpagasus.data import load_records
from alpagasus.core.io import read_jsonl
from alpagasus.data.miniature import solve
from alpagasus.reporting.miniature_table import committed_section, table_differences

SMOKE = REPO / "config" / "smoke.yaml"
VARIANTS = ["alpagasus", "alpaca", "random"]
# The first test builds the run (conftest.miniature_run): its snakemake's own bound, not the
# default 600 s, which two busy xdist workers can reach.
pytestmark = pytest.mark.timeout(1500)


def _snakemake(workdir, *args, timeout=1500):
    return run_snakemake(workdir, *args, timeout=timeout)


@pytest.fixture
def run(miniature_run):
    return miniature_run


@pytest.mark.slow
def test_selection_stage(run):
    _, res, _ = run
    records = load_records(res / "alpaca_52k.json")
    correct = [r for r in records if r["output"] == solve(r["instruction"], r["input"])]
    assert 0.6 * len(records) < len(correct) < 0.8 * len(records)  # 30% corrupted, a few accidentally right
    assert load_records(res / "filtered_9k.json") == correct  # the same records, in their order
    rand = load_records(res / "random_9k.json")
    assert len(rand) == len(correct) and rand != correct
    summary = json.loads((res / "selection_summary.json").read_text())
    assert summary["kept"] == len(correct) and summary["unscored"] == 0
    assert (res / "plots/score_hist.png").stat().st_size > 10_000


@pytest.mark.slow
def test_training_and_generation_stage(run):
    _, res, _ = run
    n_test = len(read_jsonl(res / "test_sets" / "mini.jsonl"))
    for v in VARIANTS:
        ckpt = res / "checkpoints" / f"{v}-tiny"
        log = json.loads((ckpt / "train_log.json").read_text())
        assert log["final_loss"] < log["steps"][0]["loss"]
        assert log["peak_memory_mb"]["rss_mb"] < 2000
        assert (ckpt / "loss_curve.png").is_file() and (ckpt / "config.json").is_file()
        rows = read_jsonl(res / "generations" / f"{v}-tiny" / "mini.jsonl")
        assert len(rows) == n_test and all(r["model"] == f"{v}-tiny" for r in rows)
    exact = {v: sum(r["answer"] == r["reference"] for r in read_jsonl(res / "generations" / f"{v}-tiny" / "mini.jsonl")) / n_test
             for v in VARIANTS}
    print("exact match on held-out items:", json.dumps(exact))
    assert exact["alpagasus"] > 0.05, exact  # the clean set taught something measurable


@pytest.mark.slow
def test_winrate_table_has_every_comparison_and_counts_add_up(run):
    _, res, wall = run
    n_test = len(read_jsonl(res / "test_sets" / "mini.jsonl"))
    with open(res / "winrate_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    comparisons = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["evaluation"]["comparisons"]
    assert [(r["model_a"], r["model_b"], r["test_set"]) for r in rows] == [(a, b, "mini") for a, b in comparisons]
    for r in rows:
        assert int(r["win"]) + int(r["tie"]) + int(r["lose"]) == int(r["n"])
        assert int(r["n"]) + int(r["unparsed"]) == n_test
        assert float(r["ci_low"]) <= float(r["winning_score"]) <= float(r["ci_high"])
        assert r["judge"] == "verifier"
    # Measured, not forced: printed for the README.
    print("miniature wall time %.0f s; win rates:" % wall, json.dumps(rows))
    assert (res / "plots" / "winrate_tiny.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_and_rerun_is_a_no_op(run):
    work, res, _ = run
    page = (res / "report.html").read_text()
    for section in ("Data selection", "Training", "Pairwise evaluation", "Cost of every judge stage",
                    "data:image/png;base64", "alpagasus-tiny"):
        assert section in page
    proc, _ = _snakemake(work, "--configfile", SMOKE, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    if os.environ.get("ALPAGASUS_TIMING"):
        assert run[2] < 330


@pytest.mark.slow
def test_snakemakes_own_report_holds_the_marked_results_with_captions_and_provenance(run, tmp_path):
    work, _, _ = run
    zip_path = tmp_path / "report.zip"
    _snakemake(work, "--configfile", SMOKE, "--report", zip_path)
    with zipfile.ZipFile(zip_path) as z:
        names = [Path(n).name for n in z.namelist()]
        page = z.read(next(n for n in z.namelist() if n.endswith("/report.html") and n.count("/") == 1)).decode()
    # The marked outputs: tables, plots, ledgers, each model's loss curve and log, the one-page view.
    for name in ("winrate_tiny.csv", "winrate_tiny.png", "score_hist.png", "selection_summary.json",
                 "rating_cost.json", "report.html"):
        assert name in names, name
    assert names.count("loss_curve.png") == names.count("train_log.json") == len(VARIANTS)
    assert names.count("mini.cost.json") == 2
    assert not [n for n in names if n.endswith(".safetensors")]  # never the weights
    # Captions from report/, rendered with the run's wildcards and config; rules' provenance.
    assert "Training of" in page and "alpagasus-tiny" in page and "Pairwise results for size" in page
    assert "Results directory" in page and "results/smoke" in page
    for rule in ("rate", "select", "train", "generate", "judge_pair", "winrate"):
        assert f'"{rule}"' in page, rule


@pytest.mark.slow
def test_readme_miniature_table_is_what_a_fresh_run_gives(run):
    """The README's figures are pasted from `python -m alpagasus.reporting.miniature_table`, never typed:
    the committed section is what this fresh run prints, within what another CPU's float rounding
    moves (reporting.miniature_table.table_differences: equal on the host that made it)."""
    _, res, _ = run
    proc = subprocess.run([sys.executable, "-m", "alpagasus.reporting.miniature_table", str(res)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, check=True)
    committed = committed_section((REPO / "README.md").read_text(encoding="utf-8"))
    print("fresh run's table:\n" + proc.stdout)
    assert not table_differences(committed, proc.stdout), (
        "README's miniature table differs from a fresh run beyond a host's rounding: "
        f"{table_differences(committed, proc.stdout)}; regenerate it with "
        "`python -m alpagasus.reporting.miniature_table results/smoke --readme README.md` after running the miniature")


def test_table_differences_allow_a_hosts_rounding_and_nothing_else():
    """The README table check (above) passes the two hosts' tables measured for the same code and
    fails a selection, a test set or a score that moved."""
    committed = committed_section((REPO / "README.md").read_text(encoding="utf-8"))
    assert table_differences(committed, committed) == []
    rows = committed.splitlines()
    # Another host: every float-derived count moved by 7 (the most measured between two hosts).
    moved = re.sub(r"\((\d+)/200\)", lambda m: f"({int(m[1]) - 7}/200)", committed)
    assert moved != committed and table_differences(committed, moved) == []
    wins = re.search(r"\| (\d+) / (\d+) / (\d+) \|", rows[3])
    w, t, l = map(int, wins.groups())
    for bad, what in [
        (committed.replace(wins[0], f"| {w - 20} / {t + 20} / {l} |"), "win / tie / lose"),
        (committed.replace("records the verifier kept", "records the verifier  kept"), "trained on"),
        (re.sub(r"\((\d+)/200\)", r"(\1/201)", committed, count=1), "exact match"),
        (re.sub(r"(\| )(\d\.\d{3})( \[)", lambda m: f"{m[1]}{float(m[2]) + 0.2:.3f}{m[3]}", committed, count=1),
         "winning score"),
        ("\n".join(rows[:-1]) + "\n", "shapes"),
    ]:
        assert bad != committed
        diff = table_differences(committed, bad)
        assert diff and what in diff[0], (what, diff)


@pytest.mark.slow
def test_each_selection_is_released_for_the_hub(run, tmp_path):
    import datasets

    _, res, _ = run
    cost = json.loads((res / "rating_cost.json").read_text())
    for name, data in (("alpagasus", "filtered_9k.json"), ("random", "random_9k.json")):
        rel = res / "release" / name
        loaded = datasets.load_dataset(str(rel), cache_dir=str(tmp_path / "hf_cache"))
        assert loaded["train"].to_list() == load_records(res / data)
        card = (rel / "README.md").read_text()
        assert yaml.safe_load(card.split("---\n")[1])["license"] == "cc0-1.0"  # smoke.yaml's data.license
        for text in (cost["model"], cost["prompt_version"], f"{len(loaded['train']):,} of 4,000"):
            assert text in card, (name, text)
