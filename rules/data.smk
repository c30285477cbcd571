# Stage 1: the instruction set (downloaded and verified, a local file, a Hugging Face dataset
# at a pinned revision, or the miniature), written as records in Alpaca's format.


# A checkpoint: the alpaca variant trains on it by content (rules/common.smk).
checkpoint alpaca_data:
    input:
        # A local file is an input, so editing it reruns what depends on it.
        [config["data"]["local_path"]] if config["data"]["source"] == "local" else [],
    output:
        records=f"{R}/alpaca_52k.json",
        summary=f"{R}/data_summary.json",
    params:
        data=data_params(),
        download_dir=f"{CACHE}/downloads",
    log:
        f"{R}/logs/alpaca_data.log",
    benchmark:
        f"{R}/benchmarks/alpaca_data.tsv"
    resources:
        **cpu_job(),
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/prepare_data.py"


rule mini_test_set:
    input:
        f"{R}/alpaca_52k.json",
    output:
        f"{R}/test_sets/mini.jsonl",
    params:
        n_test=config["data"]["miniature"]["n_test"],
        seed=config["data"]["miniature"]["seed"] + 1,
        families=config["data"]["miniature"]["families"],
    log:
        f"{R}/logs/mini_test_set.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/mini_test_set.py"
