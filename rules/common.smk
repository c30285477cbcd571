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
