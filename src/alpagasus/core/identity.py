"""What defines each result: the data, a judgement, a selection, a trained model, a set of answers.

One list per kind, read by the workflow (the rule params in rules/common.smk, so a change reruns
exactly what it defines) and by the library (the judgement cache's key, the training resume
fingerprint, the generation resume key). What is not listed here (limits, budgets, server URLs,
resources, batch sizes, save intervals) changes how a result is produced, never which: changing
it reruns nothing and reuses what was saved.

Pure data and small functions: no I/O but reading the schema's defaults (alpagasus.core.config).
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring as _esc  # json.dumps' own escaper (ensure_ascii=False)

# --- the instruction set ------------------------------------------------------------------------

# Per source, the keys that define the records (max_field_chars shapes the judge's prompt, and
# the miniature's n_test its test set, not the records; the Hub's cache folder is where a
# download is kept, not what it is).
DATA_KEYS = {"download": ("url", "sha256", "expected_records"), "local": ("local_path", "expected_records"),
             "hub": ("expected_records",)}
HUB_KEYS = ("path", "name", "revision", "split")
# How source rows become records (the miniature is generated as records).
MAPPING_KEYS = ("format", "fields", "messages_column", "multi_turn", "empty_output")
MINIATURE_KEYS = ("n_records", "corrupt_fraction", "seed", "families")


def data_identity(data_cfg: dict) -> dict:
    keep = {"source": data_cfg["source"]}
    if data_cfg["source"] not in DATA_KEYS:
        m = data_cfg.get("miniature") or {}
        keep["miniature"] = {k: m.get(k) for k in MINIATURE_KEYS}
        return keep
    keep.update({k: data_cfg.get(k) for k in DATA_KEYS[data_cfg["source"]]})
    if data_cfg["source"] == "hub":
        hub = data_cfg.get("hub") or {}
        keep["hub"] = {k: hub.get(k) for k in HUB_KEYS}
    keep.update({k: data_cfg.get(k) for k in MAPPING_KEYS})
    if data_cfg.get("max_records") is not None:  # a run on the first N records (the rehearsal)
        keep["max_records"] = data_cfg["max_records"]
    return keep


# --- a judgement --------------------------------------------------------------------------------

# The sampling parameters sent with every request (and part of what a cached reply answered).
JUDGE_SAMPLING_KEYS = ("temperature", "top_p", "max_tokens")
# A judge's config keys that define its judgements. Concurrency, rate limits, timeout, retries,
# prices and the server URL are read at run time: the same model behind OpenAI or Azure gives
# the same judgement.
JUDGE_KEYS = ("backend", "model", *JUDGE_SAMPLING_KEYS)


# Backends that give the same judgements as another (the Batch API runs the online model).
SAME_JUDGEMENTS_AS = {"openai_batch": "openai"}


# Keys of newer judges (score_mode, a local model's weights): part of the identity only where
# they differ from the schema's default, so a config without them keeps the params, and the
# outputs, it always had (and an online judge and its batch twin stay one identity).
JUDGE_OPTIONAL_KEYS = ("score_mode", "top_logprobs", "saturate", "revision", "gguf_file", "dtype",
                       "max_new_tokens", "structured_output")


def judge_identity(judge_cfg: dict) -> dict:
    """A judge's defining keys (the rating and judging rules' ``judge`` param)."""
    from alpagasus.core.config import filled

    ident = {k: judge_cfg.get(k) for k in JUDGE_KEYS}
    ident["backend"] = SAME_JUDGEMENTS_AS.get(ident["backend"], ident["backend"])
    default = filled("judges.*", {"backend": judge_cfg["backend"]})
    ident.update({k: judge_cfg[k] for k in JUDGE_OPTIONAL_KEYS if k in judge_cfg and judge_cfg[k] != default.get(k)})
    return ident


def judge_sampling(judge_cfg: dict) -> dict:
    """The sampling parameters a judge sends (``judge_cfg`` with its defaults filled in)."""
    return {k: judge_cfg[k] for k in JUDGE_SAMPLING_KEYS}


def judgement_key(model: str, prompt_version: str, params: dict, messages: list[dict]) -> str:
    """What a judgement is paid for: the judge model, the prompt version, the sampling
    parameters and the exact content: the sha256 of their JSON (keys sorted, no spaces, UTF-8)."""
    return judgement_keyer(model, prompt_version, params)(messages)


def _key_blob(model: str, prompt_version: str, params: dict, messages: list[dict]) -> str:
    return json.dumps(
        {"model": model, "prompt_version": prompt_version, "params": params, "messages": messages},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )


def judgement_keyer(model: str, prompt_version: str, params: dict):
    """judgement_key with the model, prompt version and params fixed: the function of the
    messages alone that a rating calls once a record (10M times at scale). The same bytes as
    json.dumps of the whole (tests/test_cache.py compares them), built from their JSON's fixed
    tail and each message's strings escaped by the escaper json.dumps itself uses, without
    sorting and walking the dict each time (a cached rerun's largest cost after parsing)."""
    tail = '],"model":' + _esc(model) + ',"params":' + json.dumps(
        params, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + ',"prompt_version":' + _esc(prompt_version) + "}"

    def message(m: dict) -> str:
        if len(m) != 2:
            raise KeyError("not {role, content}")
        return '{"content":' + _esc(m["content"]) + ',"role":' + _esc(m["role"]) + "}"

    def key(messages: list[dict]) -> str:
        try:
            blob = '{"messages":[' + ",".join(map(message, messages)) + tail
        except (KeyError, TypeError):  # not {role, content} strings: the general encoder
            blob = _key_blob(model, prompt_version, params, messages)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    return key


# --- a rating -----------------------------------------------------------------------------------

# The rating's own keys that define its scores, beside its judge's: the dimension rated and the
# prompt text (rating.prompt: paper | hardened). The prompt is listed only where it is not the
# paper's, so a config without it keeps the params, and the scores, it always had.
def rating_identity(rating_cfg: dict) -> dict:
    """What defines a rating beside its judge (the rate rules' params): the dimension, and the
    prompt only where it is not the schema's default (the paper's), so existing results keep
    their params."""
    from alpagasus.core.config import filled

    rating = filled("rating", rating_cfg)
    ident = {"dimension": rating["dimension"]}
    if rating["prompt"] != filled("rating")["prompt"]:
        ident["prompt"] = rating["prompt"]
    return ident


# --- a selection --------------------------------------------------------------------------------

SELECTION_KEYS = ("method", "threshold", "k", "fraction")


def selection_identity(selection_cfg: dict) -> dict:
    from alpagasus.core.config import filled

    rule = filled("selection_rule", selection_cfg)
    chosen = {k: rule[k] for k in SELECTION_KEYS}
    if rule["score"] != filled("selection_rule")["score"]:  # selection.score: expected_score (only then)
        chosen["score"] = rule["score"]
    if rule["exclude_flagged"]:  # only when true: a config without it keeps its params
        chosen["exclude_flagged"] = True
    return chosen


# --- a trained model ----------------------------------------------------------------------------

# Keys of a training size that change how a run executes, not what it computes (the loss is
# over the global batch and packing is exact, so the micro-batch size and packing are among
# them): a change reruns nothing, and a saved state is still resumed.
TRAINING_OPERATIONAL_KEYS = (
    "resources", "generate_resources", "save_every_steps", "fsdp_config", "attn_implementation",
    "per_device_batch_size", "pack_length", "packing",
)


def training_identity(size_cfg: dict) -> dict:
    """What defines a trained model of a size: hyperparameters, base model, tokenizer, adapter."""
    return {k: v for k, v in size_cfg.items() if k not in TRAINING_OPERATIONAL_KEYS}


def training_fingerprint(data_sha256: str, size_cfg: dict, template: str | None, seed: int) -> str:
    """What a saved training state must match to be resumed: data, hyperparameters, template, seed."""
    blob = json.dumps([data_sha256, training_identity(size_cfg), template, seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- a set of answers ---------------------------------------------------------------------------

# Keys of the `generation` config that define the answers (the batch size changes speed only).
GENERATION_KEYS = ("max_new_tokens",)
# ... and, with the vLLM engine, its keys that do (where its interpreter is, and how much memory
# it takes, do not).
VLLM_KEYS = ("max_model_len",)


def generation_identity(generation_cfg: dict) -> dict:
    """The generate rule's params. The engine is named only when it is vLLM: answers made by
    transformers before the engine could be chosen keep their params, so they are not redone,
    and switching the engine either way changes them, so the answers are."""
    from alpagasus.core.config import filled

    generation = filled("generation", generation_cfg)
    out = {k: generation[k] for k in GENERATION_KEYS}
    if generation["engine"] == "vllm":
        out.update(engine="vllm", **{k: generation["vllm"][k] for k in VLLM_KEYS})
    return out


def generation_key(*, checkpoint: str, test_set_sha256: str, testset: str, model_name: str,
                   template: str | None, max_new_tokens: int, dtype: str, engine: dict) -> str:
    """What one set of answers depends on: the checkpoint's identity, the test set's content,
    the template, the decoding (``max_new_tokens``, dtype) and the engine (its name, and for
    vLLM its version and max_model_len: a resumed run never mixes two engines' answers)."""
    blob = json.dumps({"checkpoint": checkpoint, "test_set": test_set_sha256, "testset": testset,
                       "model": model_name, "template": template, "max_new_tokens": int(max_new_tokens),
                       "dtype": dtype, "engine": engine}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- a per-record signal ------------------------------------------------------------------------

# Keys of a signal that change how it runs, not its values: a change reruns nothing.
SIGNAL_OPERATIONAL_KEYS = ("batch_size", "device_map", "resources")
# Kinds whose values come from the same forward passes: IFD's two losses give the perplexity,
# so the two share their cached losses.
SAME_VALUES_AS = {"perplexity": "ifd"}
# Where a model and its tokenizer are found: not what they are (the sha256 of their files is, in
# signal_cache_key).
SIGNAL_LOCATION_KEYS = ("model", "revision", "gguf_file", "tokenizer")
# Bumped when what a cached value means changes (a new loss definition), never otherwise.
SIGNAL_CACHE_VERSION = 1


def signal_identity(signal_cfg: dict) -> dict:
    """What defines a signal's values (its rule's params): the kind, the model as named (model,
    revision, gguf_file), dtype, max_length, tokenizer and the kind's own keys; not the batch
    size, device or job size."""
    from alpagasus.core.config import filled

    signal = filled("signals.*", signal_cfg)
    return {k: v for k, v in sorted(signal.items()) if k not in SIGNAL_OPERATIONAL_KEYS}


def signal_cache_key(identity: dict, weights_sha256: str, **context) -> str:
    """The per-record cache a signal's values live in: what the model *is* (the sha256 of its
    weights, not where it was found), the keys that define the values, and ``context`` (the
    tokenizer files' sha256, the prompt template, the effective max_length)."""
    what = {k: v for k, v in identity.items() if k not in SIGNAL_LOCATION_KEYS}
    what["kind"] = SAME_VALUES_AS.get(what["kind"], what["kind"])
    blob = json.dumps({"signal": what, "weights_sha256": weights_sha256, "context": context,
                       "version": SIGNAL_CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
