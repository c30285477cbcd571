# Shared by every stage: where results go, and the small functions that pick out of the
# config exactly what defines each output (so a change reruns just what it touches).

R = config["results_dir"]
CACHE = config["cache_dir"]


def data_params():
    # Only what defines the records: a change of max_field_chars or n_test must not
    # re-create the data (and with it every downstream result).
    d = config["data"]
    keep = {"source": d["source"]}
    if d["source"] == "download":
        keep.update(url=d["url"], sha256=d.get("sha256"), expected_records=d.get("expected_records"))
    elif d["source"] == "local":
        keep.update(local_path=d.get("local_path"))
    else:
        m = d.get("miniature") or {}
        keep["miniature"] = {k: m.get(k) for k in ("n_records", "corrupt_fraction", "seed", "families")}
    if d.get("max_records") is not None and d["source"] != "miniature":
        keep["max_records"] = d["max_records"]
    return keep


def judge_identity(name):
    # What defines a judgement: model and sampling. Limits, budget, prices and the server URL
    # are read at run time and never rerun anything.
    j = config["judges"][name]
    return {k: j.get(k) for k in ("backend", "model", "temperature", "top_p", "max_tokens")}


def selection_rule(cfg):
    return {k: cfg.get(k) for k in ("method", "threshold", "k", "fraction")}


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


# Keys of a size that change how a run is executed, not what it produces (the loss is over the
# global batch and packing is exact, so micro-batch size and packing are among them): they stay
# out of the rule's params, so changing them reruns nothing. scripts/train.py reads them from
# the config.
OPERATIONAL_KEYS = (
    "resources", "generate_resources", "save_every_steps", "fsdp_config", "attn_implementation",
    "per_device_batch_size", "pack_length", "packing",
)


def model_params(size):
    """What defines a trained model of this size: hyperparameters, base model, tokenizer."""
    return {k: v for k, v in size_config(size).items() if k not in OPERATIONAL_KEYS}


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


# --- GGUF base models (rules/train.smk: convert_gguf) ------------------------------------------

import re

from alpagasus import gguf

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
