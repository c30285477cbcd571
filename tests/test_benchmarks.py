"""Benchmarks through lm-evaluation-harness (evaluation.benchmarks, rules/benchmark.smk): the real
lm-eval code path (HFLM, TaskManager with an include_path, simple_evaluate) on local tasks, a task
YAML over a local JSONL file, through snakemake, on SmolLM2-135M-Instruct and a tiny random model;
the table's numbers are checked against log-likelihoods computed here with transformers alone."""
import csv
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml
from conftest import REPO, requires_package, run_snakemake

from test_slurm import job_stats, parse_jobs

LM_EVAL = ("lm_eval", 'pip install -e ".[benchmarks]"')

# Sums a + b with four choices; the model's preference is not trivially all right or all wrong.
TRAIN = [(2, 3), (10, 5), (7, 8), (1, 1)]
TEST = [(3, 4), (6, 2), (9, 9), (5, 7), (12, 3), (8, 1), (4, 4), (11, 6), (2, 9), (7, 7), (15, 5), (3, 3)]


def arithmetic_docs(pairs):
    docs = []
    for n, (a, b) in enumerate(pairs):
        s = a + b
        choices = [str(s), str(s + 1), str(s - 2), str(s * 2)]
        # The right answer at a different place each time.
        k = n % 4
        choices[0], choices[k] = choices[k], choices[0]
        docs.append({"question": f"What is {a} + {b}?", "choices": choices, "answer": k})
    return docs


def task_yaml(name, data_dir):
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(data_dir / "train.jsonl"), "test": str(data_dir / "test.jsonl")}},
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 3.0},
    }


TASKS = [{"task": "alpagasus_sums", "num_fewshot": 0, "metric": "acc", "label": "sums"},
         {"task": "alpagasus_sums_shots", "num_fewshot": 2, "metric": "acc_norm", "label": "sums_2shot"}]


def direct_scores(model_dir, docs, shots):
    """{shots: (accuracy, length-normalised accuracy)} as lm-eval defines them for a
    multiple-choice task, computed here with transformers: for each choice, the sum of the
    log-probabilities of its tokens (" " + choice) after the context (the first n training docs
    answered, then the question); the choice with the most wins, or with the most per character
    of the choice."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def text(d):
        return f"Question: {d['question']}\nAnswer:"

    out = {}
    for n in (0, 2):
        prefix = "".join(f"{text(d)} {d['choices'][d['answer']]}\n\n" for d in shots[:n])
        acc = acc_norm = 0
        for d in docs:
            context = prefix + text(d)
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            lls = []
            for choice in d["choices"]:
                whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
                cont = whole[len(ctx):]
                with torch.no_grad():
                    logits = model(torch.tensor([whole[:-1]])).logits[0].float()
                logp = torch.log_softmax(logits, -1)[len(ctx) - 1:]
                lls.append(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
            acc += max(range(4), key=lls.__getitem__) == d["answer"]
            acc_norm += max(range(4), key=lambda i: lls[i] / len(d["choices"][i])) == d["answer"]
        out[n] = (acc / len(docs), acc_norm / len(docs))
    return out


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory, smollm2_converted):
    """Two checkpoints (SmolLM2-135M and a tiny random LLaMA with its tokenizer) benchmarked on two
    local tasks through snakemake: (work dir, results dir, run output)."""
    requires_package(*LM_EVAL)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    work = tmp_path_factory.mktemp("benchmarks")
    data, tasks = work / "data", work / "tasks"
    data.mkdir()
    tasks.mkdir()
    for split, pairs in (("train", TRAIN), ("test", TEST)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in arithmetic_docs(pairs)))
    for t in TASKS:
        (tasks / f"{t['task']}.yaml").write_text(yaml.safe_dump(task_yaml(t["task"], data), sort_keys=False))
    res = work / "results" / "bench"
    ck = res / "checkpoints"
    ck.mkdir(parents=True)
    shutil.copytree(smollm2_converted, ck / "alpagasus-tiny")
    tok = AutoTokenizer.from_pretrained(str(smollm2_converted))
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                        # Spread logits: no near-ties between choices that float rounding could flip.
                                        initializer_range=0.5))
    tiny.save_pretrained(ck / "alpaca-tiny")
    tok.save_pretrained(ck / "alpaca-tiny")
    overlay = work / "bench.yaml"
    overlay.write_text(yaml.safe_dump({
        "results_dir": "results/bench",
        "evaluation": {"comparisons": [["alpagasus", "alpaca"]],
                       "benchmarks": {"tasks": TASKS, "include_path": str(tasks), "batch_size": 4,
                                      "bootstrap_iters": 100}},
    }))
    args = ["--configfile", REPO / "config" / "smoke.yaml", overlay]
    # The checkpoints are given: only the benchmark rules may run (what a user does to benchmark
    # models trained elsewhere).
    proc, _ = run_snakemake(work, "results/bench/benchmarks_tiny.csv", *args,
                            "--allowed-rules", "lm_eval", "benchmarks_table", timeout=900)
    return work, res, args, proc


def test_the_table_is_lm_evals_scores_and_they_equal_a_direct_computation(benchmarked, smollm2_converted):
    _, res, _, _ = benchmarked
    with open(res / "benchmarks_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["alpagasus-tiny", "alpaca-tiny"]
    assert list(rows[0]) == ["model", "sums", "sums_stderr", "sums_2shot", "sums_2shot_stderr"]
    docs, shots = arithmetic_docs(TEST), arithmetic_docs(TRAIN)
    for row, model_dir in zip(rows, [res / "checkpoints" / "alpagasus-tiny", res / "checkpoints" / "alpaca-tiny"]):
        direct = direct_scores(model_dir, docs, shots)
        acc0, norm2 = direct[0][0], direct[2][1]
        assert float(row["sums"]) == pytest.approx(acc0, abs=1e-4), row
        assert float(row["sums_2shot"]) == pytest.approx(norm2, abs=1e-4), row
        assert float(row["sums_stderr"]) > 0
    # Not all alike: the two models (and the shot counts) give different numbers, so a table
    # that repeated one run would fail above.
    assert len({(r["sums"], r["sums_2shot"]) for r in rows}) == 2
    assert (res / "plots" / "benchmarks_tiny.png").stat().st_size > 0


def test_each_checkpoint_has_lm_evals_results_with_task_and_harness_versions(benchmarked):
    _, res, _, _ = benchmarked
    out = json.loads((res / "benchmarks" / "alpagasus-tiny.json").read_text())
    assert out["lm_eval_version"] == version("lm_eval")
    assert out["versions"] == {"alpagasus_sums": 3.0, "alpagasus_sums_shots": 3.0}
    assert out["n-shot"] == {"alpagasus_sums": 0, "alpagasus_sums_shots": 2}
    assert out["n-samples"]["alpagasus_sums"]["effective"] == len(TEST)
    assert out["config"]["model"] == "alpagasus-tiny"
    assert {"acc,none", "acc_norm,none", "acc_stderr,none"} <= set(out["results"]["alpagasus_sums"])
    assert out["alpagasus"]["tasks"][1]["num_fewshot"] == 2


def test_editing_a_local_task_reruns_the_benchmarks_and_the_batch_size_does_not(benchmarked):
    work, res, args, _ = benchmarked
    dry = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), "-n",
           "results/bench/benchmarks_tiny.csv", *map(str, args), "--allowed-rules", "lm_eval", "benchmarks_table"]
    same = subprocess.run([*dry, "--config", "evaluation={'benchmarks': {'batch_size': 1}}"], capture_output=True,
                          text=True, timeout=300)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "Nothing to be done" in same.stdout + same.stderr, same.stdout[-2000:]
    task = next((work / "tasks").glob("alpagasus_sums.yaml"))
    task.write_text(task.read_text().replace("Answer:", "Answer is:"))
    try:
        changed = subprocess.run(dry, capture_output=True, text=True, timeout=300)
        assert changed.returncode == 0, changed.stderr[-3000:]
        assert job_stats(changed.stdout + changed.stderr).get("lm_eval") == 2, changed.stdout[-2000:]
    finally:
        task.write_text(task.read_text().replace("Answer is:", "Answer:"))


def test_an_unknown_task_is_one_error_naming_it(benchmarked):
    from alpagasus.evaluation.benchmarks import check_tasks

    work = benchmarked[0]
    with pytest.raises(ValueError, match=r"evaluation.benchmarks.tasks: alpagasus_nope: not an lm-eval task"):
        check_tasks([{"task": "alpagasus_sums"}, {"task": "alpagasus_nope"}], str(work / "tasks"))


def test_task_score_reads_the_configured_metric_or_the_first():
    from alpagasus.evaluation.benchmarks import task_score

    results = {"results": {"bbh": {"alias": "bbh", "exact_match,get-answer": 0.25,
                                   "exact_match_stderr,get-answer": 0.01, "acc,none": 0.5}}}
    assert task_score(results, {"task": "bbh", "metric": "exact_match"}) == (0.25, 0.01, "exact_match,get-answer")
    assert task_score(results, {"task": "bbh", "metric": "acc,none"}) == (0.5, None, "acc,none")
    assert task_score(results, {"task": "bbh", "metric": None})[2] == "exact_match,get-answer"
    with pytest.raises(ValueError, match="task 'bbh' reports no metric 'f1'"):
        task_score(results, {"task": "bbh", "metric": "f1"}, "x.json")
    with pytest.raises(ValueError, match="x.json: no results for task 'drop'"):
        task_score(results, {"task": "drop"}, "x.json")


def test_the_paper_config_plans_one_gpu_job_per_checkpoint_under_the_slurm_profile(tmp_path):
    """`snakemake -n results/benchmarks_13b.csv --profile slurm` from the repo root: one lm_eval
    job per compared 13B checkpoint, each with the size's generation resources (a GPU job)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/benchmarks_13b.csv", "--profile", "slurm",
                           "--directory", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SNAKEMAKE_PROFILE": ""})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    variants = sorted({v for pair in cfg["evaluation"]["comparisons"] for v in pair})
    jobs = [j for j in parse_jobs(log) if j["rule"] == "lm_eval"]
    assert sorted(j["wildcards"]["variant"] for j in jobs) == variants
    assert job_stats(log)["benchmarks_table"] == 1
    block = cfg["training"]["sizes"]["13b"]["generate_resources"]
    for j in jobs:
        assert j["wildcards"]["size"] == "13b" and not j["local"]
        assert j["resources"]["gres"] == f"gpu:{cfg['slurm']['gpu_type']}:{block['gpus']}", j
        assert int(j["resources"]["mem_mb"]) == block["mem_mb"]


def test_the_report_page_shows_the_table_in_percent_with_its_plot(benchmarked):
    from alpagasus.reporting.report import _benchmarks_section

    _, res, _, _ = benchmarked
    with open(res / "benchmarks_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    page = "".join(_benchmarks_section([("tiny", res / "benchmarks_tiny.csv", res / "plots" / "benchmarks_tiny.png")]))
    assert "<h2>Benchmarks</h2>" in page and "data:image/png;base64," in page
    assert "<th>sums</th>" in page and "<th>sums_2shot</th>" in page and "_stderr</th>" not in page
    for r in rows:
        assert f"{100 * float(r['sums']):.1f} ± {100 * float(r['sums_stderr']):.1f}" in page


def test_the_scores_go_to_the_tracked_runs_as_benchmark_metrics(benchmarked):
    from alpagasus.training.tracking import benchmark_metrics

    _, res, _, _ = benchmarked
    with open(res / "benchmarks_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    metrics = benchmark_metrics([{k: (v if k == "model" else float(v)) for k, v in r.items()} for r in rows])
    assert set(metrics) == {"alpagasus-tiny", "alpaca-tiny"}
    assert metrics["alpaca-tiny"] == {f"benchmarks/{k}": float(v) for k, v in rows[1].items() if k != "model"}


def test_local_tasks_alone_skip_lm_evals_own_index_and_any_other_task_gets_it(tmp_path):
    requires_package(*LM_EVAL)
    from alpagasus.evaluation.benchmarks import check_tasks, task_manager

    (tmp_path / "data").mkdir()
    for t in TASKS:
        (tmp_path / f"{t['task']}.yaml").write_text(yaml.safe_dump(task_yaml(t["task"], tmp_path / "data"), sort_keys=False))
    local = task_manager(tmp_path, TASKS)
    assert {t["task"] for t in TASKS} <= set(local.all_tasks) and "arc_easy" not in local.all_tasks
    check_tasks(TASKS, str(tmp_path), local)
    mixed = TASKS + [{"task": "arc_easy", "num_fewshot": 0}]
    whole = task_manager(tmp_path, mixed)
    assert {"arc_easy", *(t["task"] for t in TASKS)} <= set(whole.all_tasks)
    with pytest.raises(ValueError, match=r"evaluation.benchmarks.tasks: no_such_task: not an lm-eval task"):
        check_tasks([{"task": "no_such_task", "num_fewshot": 0}], str(tmp_path), whole)
