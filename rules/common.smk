# Shared by every stage: where results go, and the small functions that pick out of the
# config exactly what defines each output (so a change reruns just what it touches).

from alpagasus.core import identity

R = config["results_dir"]
CACHE = config["cache_dir"]


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
    refs = config.get("evaluation", {}).get("references") or {}
    if name in refs:
        return f"{refs[name]}/{testset}.jsonl"
    return f"{R}/generations/{name}-{size}/{testset}.jsonl"


def judgement_files(size):
    ev = config.get("evaluation", {})
    return [
        {"model_a": a, "model_b": b, "test_set": t,
         "path": f"{R}/judgements/{size}/{a}-vs-{b}/{t}.jsonl"}
        for a, b in ev.get("comparisons", [])
        for t in config["generation"]["test_sets"]
    ]


def compared_checkpoints():
    # The checkpoints behind the configured comparisons (references are not trained here).
    ev = config.get("evaluation", {})
    refs = ev.get("references") or {}
    names = dict.fromkeys(v for pair in ev.get("comparisons", []) for v in pair if v not in refs)
    return [f"{R}/checkpoints/{v}-{s}" for s in ev.get("sizes", []) for v in names]


# --- training and generation (training.sizes) ---------------------------------------------


def variant_data(variant):
    """The JSON list of Alpaca records a training variant uses."""
    fixed = {
        "alpagasus": f"{R}/filtered_9k.json",
        "alpaca": f"{R}/alpaca_52k.json",
        "random": f"{R}/random_9k.json",
    }
    if variant in fixed:
        return fixed[variant]
    if variant in (config.get("selection", {}).get("extra") or {}):
        return f"{R}/selections/{variant}.json"
    raise ValueError(
        f"training variant {variant!r} is neither alpagasus/alpaca/random nor a name in "
        f"selection.extra ({sorted(config.get('selection', {}).get('extra') or {})})"
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
    return size_config(size).get(key) or {}


def _gpus(size, key):
    return int(_res(size, key).get("gpus", 0) or 0)


def slurm_partition(size, key):
    slurm = config.get("slurm") or {}
    if _gpus(size, key) > 0:
        return slurm.get("gpu_partition") or ""
    return slurm.get("cpu_partition") or ""


def slurm_gres(size, key):
    """`gpu:{type}:{n}` for a GPU job; empty (the Slurm plugin then sends no --gres) otherwise."""
    n = _gpus(size, key)
    if n <= 0:
        return ""
    gpu_type = (config.get("slurm") or {}).get("gpu_type")
    return f"gpu:{gpu_type}:{n}" if gpu_type else f"gpu:{n}"


def slurm_extra(size, key):
    """A GPU job asks for SIGUSR1 before its time limit: training saves and the rerun resumes."""
    before = (config.get("slurm") or {}).get("signal_before_end_s")
    return f"--signal=USR1@{int(before)}" if before and _gpus(size, key) > 0 else ""


def rule_resources(key):
    """Snakemake `resources:` callables for one resource block (train or generate).

    Empty strings are resources the Slurm plugin leaves out (no -A, no --gres, ...)."""
    return dict(
        mem_mb=lambda wc: int(_res(wc.size, key).get("mem_mb", 2000)),
        runtime=lambda wc: int(_res(wc.size, key).get("runtime_min", 60)),
        cpus_per_task=lambda wc: int(_res(wc.size, key).get("cpus_per_task", 1)),
        nodes=lambda wc: int(_res(wc.size, key).get("nodes", 1)),
        slurm_partition=lambda wc: slurm_partition(wc.size, key),
        slurm_account=(config.get("slurm") or {}).get("account") or "",
        gres=lambda wc: slurm_gres(wc.size, key),
        slurm_extra=lambda wc: slurm_extra(wc.size, key),
    )


def cpu_job(**resources):
    """Resources of a CPU-only Slurm job: partition and account from config["slurm"] (one place)."""
    slurm = config.get("slurm") or {}
    return dict(slurm_partition=slurm.get("cpu_partition") or "",
                slurm_account=slurm.get("account") or "", **resources)


# --- judges as jobs: a local transformers judge with GPUs is a GPU job ---------------------


def judge_job(name):
    """Slurm resources of a rating or judging job. An API judge (or the verifier) is a CPU job
    (a batch judge's as long as its window);
    a `transformers` judge gets the GPU partition and its own `resources` (gpus, cpus_per_task,
    mem_mb, runtime_min) when it asks for GPUs, else a CPU job of that size."""
    j = config["judges"][name]
    if j.get("backend") == "openai_batch":
        # It waits for its batches (answered within 24 h), so its runtime covers that window;
        # killed anyway, the rerun resumes the same batches.
        return cpu_job(runtime=int(j.get("runtime_min", 26 * 60)))
    if j.get("backend") != "transformers":
        return cpu_job()
    res = j.get("resources") or {}
    gpus = int(res.get("gpus", 0) or 0)
    slurm = config.get("slurm") or {}
    sized = dict(mem_mb=int(res.get("mem_mb", 16000)), runtime=int(res.get("runtime_min", 240)),
                 cpus_per_task=int(res.get("cpus_per_task", 4)))
    if gpus <= 0:
        return cpu_job(**sized)
    gpu_type = slurm.get("gpu_type")
    return dict(slurm_partition=slurm.get("gpu_partition") or "", slurm_account=slurm.get("account") or "",
                gres=f"gpu:{gpu_type}:{gpus}" if gpu_type else f"gpu:{gpus}", **sized)


def judge_job_by_wildcard():
    """judge_job for a rule whose {judge} wildcard names the judge (rule rate_compare)."""
    keys = ("slurm_partition", "slurm_account", "gres", "mem_mb", "runtime", "cpus_per_task")
    defaults = {"slurm_partition": "", "slurm_account": "", "gres": "", "mem_mb": 2000, "runtime": 60,
                "cpus_per_task": 1}
    return {k: (lambda wc, k=k: judge_job(wc.judge).get(k, defaults[k])) for k in keys}


# --- judge agreement (rules/agreement.smk) -------------------------------------------------


def agreement_judges():
    main = config["rating"]["judge"]
    return [main] + [j for j in config["rating"].get("compare") or [] if j != main]


def judge_scores_file(name):
    # rating.judge's own scores are the main ones; another judge's live beside them.
    if name == config["rating"]["judge"]:
        return f"{R}/scores.jsonl"
    return f"{R}/compare/{name}/scores.jsonl"


def agreement_wanted():
    return bool(config["rating"].get("compare") or config["selection"].get("compare_to"))


def agreement_outputs():
    return [f"{R}/judge_agreement.json", f"{R}/plots/judge_agreement.png"] if agreement_wanted() else []


# --- GGUF base models (rules/train.smk: convert_gguf) ------------------------------------------

import re

from alpagasus.core import model_files as gguf

MODELS = config.get("models_dir", "models")
# converted directory name -> the GGUF file as config names it
GGUF_SOURCES = {
    gguf.converted_name(s["base_model"]): s["base_model"]
    for s in config["training"]["sizes"].values()
    if gguf.is_gguf((s or {}).get("base_model"))
}


def converted_base_model(size):
    """The converted directory a size trains from when its base_model is a GGUF file, else []."""
    base = size_config(size).get("base_model")
    return f"{MODELS}/{gguf.converted_name(base)}" if gguf.is_gguf(base) else []
