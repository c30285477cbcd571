"""The config: read (YAML, duplicate keys refused), merged with overlays, validated against
config/schema.yaml with the schema's defaults filled in, and the checks a JSON schema cannot
express. The workflow (Snakefile) and the CLI both load it through here."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "config" / "schema.yaml"
BUILTIN_VARIANTS = {"alpagasus", "alpaca", "random"}


class ConfigError(ValueError):
    pass


def merge(base: dict, over: dict) -> dict:
    """An overlay over a base, exactly as Snakemake merges --configfile overlays: a mapping is
    merged key by key (an overlay holds only differences); anything else, a list, a scalar or
    null, replaces the base's value. So `null` removes what the base sets (`selection: {extra:
    null}`), while an empty mapping `{}` changes nothing (see check_overlay)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML that refuses a key written twice in one mapping: PyYAML keeps the last silently, so
    a second `max_usd:` further down an overlay would replace the first unseen."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges, never repeats
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first != key_node.start_mark.line:
                    raise _DuplicateKey(problem=f"duplicate key {key!r} (first at line {first + 1}; "
                                                f"YAML would keep only the last)", problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """A config file; a syntax error or a duplicate key names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as exc:
        mark = exc.problem_mark
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}: line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys, got {type(data).__name__}")
    return data


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key: ``config judges.fake.temperature: -1 is less than ...``."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        message = message.replace("Additional properties are not allowed", "unknown key(s)")
        message = message.replace("Unevaluated properties are not allowed", "unknown key(s)")
    if len(message) > 300:  # never dump a whole sub-config into one line
        message = message[:300] + " ..."
    return f"config {where}: {message}"


def check_overlay(base: dict, overlay: dict, source: str, _where: tuple = ()) -> None:
    """An overlay's `{}` where the base holds entries is a mistake: merged key by key, it removes
    nothing (a 300-record run would silently inherit the paper's top3k and top6k). Say so, and
    what removes them."""
    for k, v in overlay.items():
        here = base.get(k) if isinstance(base, dict) else None
        if isinstance(v, dict) and isinstance(here, dict):
            if not v and here:
                raise ConfigError(
                    f"{source}: {'.'.join(map(str, (*_where, k)))}: {{}} removes nothing: an overlay's "
                    f"mapping is merged key by key into the base's, so {', '.join(map(str, here))} stay; "
                    f"write `{k}: null` to remove them")
            check_overlay(here, v, source, (*_where, k))


def merge_overlays(base: dict, overlays: list[tuple[str, dict]]) -> dict:
    """``base`` with each (source, overlay) merged in turn, each checked by check_overlay."""
    cfg = base
    for source, over in overlays:
        check_overlay(cfg, over, source)
        cfg = merge(cfg, over)
    return cfg


def selection_warnings(cfg: dict) -> list[str]:
    """Selections that will keep everything, known before any record is rated: a k or fraction
    beyond data.max_records (a run on a slice still inherits the paper's top3k and top6k)."""
    n = (cfg.get("data") or {}).get("max_records")
    if not n:
        return []
    sel = cfg.get("selection") or {}
    rules = {"selection": sel, **{f"selection.extra.{name}": r for name, r in (sel.get("extra") or {}).items()},
             **{f"selection.selectors.{name}": r for name, r in (sel.get("selectors") or {}).items()}}
    return [f"config {where}: top_k k = {r['k']} >= data.max_records = {n}: it will keep every scored record "
            f"(set `extra: null` in the overlay to drop the base's selections)"
            for where, r in rules.items() if r.get("method") == "top_k" and (r.get("k") or 0) >= n]


# --- the schema and its defaults -------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _schema(path: Path) -> dict:
    # libyaml's loader where PyYAML has it: the schema is read at every snakemake start (and by
    # every Slurm job), and the pure-Python one takes ~0.15 s for it.
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def _fill_properties(validator, properties, instance, schema):
    """jsonschema's `properties`, filling each absent key that has a `default` first (a copy:
    two judges never share one mapping). Validation then descends into the filled value, so the
    defaults of a default mapping (`resources: {}`) are filled too, and so are those inside
    additionalProperties (judges.<name>, training.sizes.<name>) and $ref'd definitions."""
    if validator.is_type(instance, "object"):
        for key, sub in properties.items():
            if key not in instance and isinstance(sub, dict) and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_Filling = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": _fill_properties})


@functools.lru_cache(maxsize=4)
def _filling_validator(path: Path):
    return _Filling(_schema(path))


def _subschema(where: str, path: Path = SCHEMA) -> dict:
    """A part of the schema: a $defs name ("openai_judge") or a dotted config path, `*` for any
    name ("rating", "judges.*", "training.sizes.*")."""
    root = _schema(path)
    if where in root.get("$defs", {}):
        return root["$defs"][where]
    node = root
    for part in where.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def filled(where: str, value: dict | None = None) -> dict:
    """A copy of ``value``, a part of a config (one judge, the rating section, a training size),
    with the schema's defaults filled in, nested ones too: for library functions called with a
    part of a config. ``where`` as for _subschema. Nothing is validated here."""
    out = copy.deepcopy(value) if value else {}
    validator = _filling_validator(SCHEMA).evolve(schema=_subschema(where))
    for _ in validator.iter_errors(out):  # filling happens as it validates
        pass
    return out


def defaults(where: str) -> dict:
    """The defaults of a part of the config (``filled`` of nothing), e.g. defaults("data")."""
    return filled(where)


def validate(cfg: dict, schema_path: str | Path = SCHEMA) -> dict:
    """``cfg`` checked against the schema, with its defaults filled in place (Snakemake's
    ``config`` included), and its cross-references checked; a ConfigError names the key."""
    errors = list(_filling_validator(Path(schema_path)).iter_errors(cfg))
    if errors:
        # The deepest, most specific error: the key that is wrong, not the mapping holding it.
        raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    check_references(cfg)
    return cfg


def check_workflow_inputs(cfg: dict) -> None:
    """What the workflow reads from config that the CLI takes as an argument instead (`rate
    --records`): checked by the Snakefile and `alpagasus check-config`, not by `load`."""
    data = cfg["data"]
    if data["source"] == "local":
        path = data.get("local_path")
        if not path:
            raise ConfigError("config data.local_path: required with data.source: local (a .json, .jsonl, "
                              ".parquet or .csv file, or a save_to_disk directory)")
        if not Path(path).expanduser().exists():
            raise ConfigError(f"config data.local_path: {path} does not exist")


def check_references(cfg: dict) -> None:
    """Names that point at other entries must exist."""
    judges = cfg.get("judges", {})
    for section in ("rating", "evaluation"):
        name = (cfg.get(section) or {}).get("judge")
        if name is not None and name not in judges:
            raise ConfigError(f"config {section}.judge: no judge named {name!r} (judges: {', '.join(sorted(judges))})")
    for name in (cfg.get("rating") or {}).get("compare") or []:
        if name not in judges:
            raise ConfigError(f"config rating.compare: no judge named {name!r} (judges: {', '.join(sorted(judges))})")
    _apply_comparison_k(cfg)
    _check_selectors(cfg)
    selection = cfg.get("selection") or {}
    known = BUILTIN_VARIANTS | set(selection.get("extra") or {}) | set(selection.get("selectors") or {})
    refs = set((cfg.get("evaluation") or {}).get("references") or {})
    for v in (cfg.get("training") or {}).get("variants") or []:
        if v not in known:
            raise ConfigError(f"config training.variants: {v!r} is neither alpagasus/alpaca/random nor a "
                              f"selection.extra or selection.selectors name")
    sizes = set(((cfg.get("training") or {}).get("sizes") or {}))
    for s in (cfg.get("evaluation") or {}).get("sizes") or []:
        if sizes and s not in sizes:
            raise ConfigError(f"config evaluation.sizes: {s!r} is not under training.sizes ({', '.join(sorted(sizes))})")
    for a, b in (cfg.get("evaluation") or {}).get("comparisons") or []:
        for v in (a, b):
            if v not in known | refs:
                raise ConfigError(f"config evaluation.comparisons: {v!r} is not a variant or a reference")
    for name in (cfg.get("evaluation") or {}).get("data_size") or []:
        if name not in known - {"alpaca"}:
            raise ConfigError(f"config evaluation.data_size: {name!r} is neither alpagasus/random nor a "
                              f"selection.extra or selection.selectors name")
    for name in known:
        if SEEDED_NAME.match(name):
            raise ConfigError(f"config selection: the name {name!r} ends like a seeded variant (_seed<N>, "
                              f"evaluation.seeds); rename it")
    _check_trained_models(cfg, known, sizes)
    for name, size in ((cfg.get("training") or {}).get("sizes") or {}).items():
        _check_size_paths(name, size or {})
        _check_gguf(f"training.sizes.{name}.base_model", (size or {}).get("base_model"))
    for name, judge in judges.items():
        _check_judge_paths(name, judge or {})
        if (why := structured_output_conflict(name, judge or {})) is not None:
            raise ConfigError(why)


# A variant trained with another seed than training.seed (evaluation/selectors_table.py seeded).
SEEDED_NAME = re.compile(r"^.+_seed\d+$")


def _apply_comparison_k(cfg: dict) -> None:
    """evaluation.selectors names selection.selectors entries of method top_k; the comparison's
    k is theirs (filled where they name none: one home for the size they are compared at)."""
    comp = (cfg.get("evaluation") or {}).get("selectors") or {}
    names = comp.get("names") or []
    if not names:
        return
    k = comp.get("k")
    if k is None:
        raise ConfigError("config evaluation.selectors.k: required with evaluation.selectors.names (the size "
                          "every selector keeps; the paper's: 9229, the records its judge rated >= 4.5)")
    selectors = (cfg.get("selection") or {}).get("selectors") or {}
    for name in names:
        if name in BUILTIN_VARIANTS:
            raise ConfigError(f"config evaluation.selectors.names: {name!r} is a built-in variant, not a selector "
                              f"(random at k and the full set are every selector's opponents; the judge's "
                              f"selection at k is a selector with signal: score, method: top_k)")
        if name not in selectors:
            raise ConfigError(f"config evaluation.selectors.names: no selector named {name!r} under "
                              f"selection.selectors ({', '.join(sorted(selectors)) or 'none'})")
        sel = selectors[name]
        if sel.get("method") != "top_k":
            raise ConfigError(f"config selection.selectors.{name}.method: {sel.get('method')!r}, but "
                              f"evaluation.selectors compares it at k = {k}: use method: top_k")
        if sel.get("k") is None:
            sel["k"] = k
        elif sel["k"] != k:
            raise ConfigError(f"config selection.selectors.{name}.k: {sel['k']}, but evaluation.selectors.k is {k} "
                              f"(leave it out: the comparison's k is used)")


# What each method of a selector needs.
METHOD_KEY = {"threshold": "threshold", "top_k": "k", "top_fraction": "fraction"}


def _check_selectors(cfg: dict) -> None:
    """selection.selectors name configured signals: a ranking one (score, expected_score or a
    `signals:` entry that is not an embedding) and, for dedupe / diversity, one embedding."""
    selection = cfg.get("selection") or {}
    selectors = selection.get("selectors") or {}
    signals = cfg.get("signals") or {}
    # The judge's fields of scores.jsonl (selection.score's choices), ranked without a `signals:` entry.
    score_signals = _schema(SCHEMA)["$defs"]["selection_keys"]["properties"]["score"]["enum"]
    both = sorted(set(selectors) & set(selection.get("extra") or {}))
    if both:
        raise ConfigError(f"config selection.selectors.{both[0]}: also a selection.extra name (both would write "
                          f"selections/{both[0]}.json)")
    configured = f"signals: {', '.join(sorted(signals)) or 'none'}; or {' / '.join(score_signals)}"
    for name, sel in selectors.items():
        where = f"config selection.selectors.{name}"
        signal = sel.get("signal")
        if signal not in score_signals and signal not in signals:
            raise ConfigError(f"{where}.signal: no signal named {signal!r} ({configured})")
        if (signals.get(signal) or {}).get("kind") == "embedding":
            raise ConfigError(f"{where}.signal: {signal!r} is an embedding, which ranks nothing; name it under "
                              f"dedupe or diversity, and rank by another signal")
        key = METHOD_KEY.get(sel.get("method"))
        if key and sel.get(key) is None:
            raise ConfigError(f"{where}.{key}: required with method: {sel['method']}")
        embeddings = set()
        for part in ("dedupe", "diversity"):
            emb = (sel.get(part) or {}).get("embedding")
            if emb is None:
                continue
            kind = (signals.get(emb) or {}).get("kind")
            if emb not in signals or kind != "embedding":
                got = f"a signal of kind {kind!r}" if emb in signals else "not under signals:"
                raise ConfigError(f"{where}.{part}.embedding: {emb!r} is {got}; expected a signal of kind embedding "
                                  f"(signals of that kind: "
                                  f"{', '.join(sorted(n for n, s in signals.items() if (s or {}).get('kind') == 'embedding')) or 'none'})")
            embeddings.add(emb)
        if len(embeddings) > 1:
            raise ConfigError(f"{where}: dedupe and diversity name different embeddings ({', '.join(sorted(embeddings))}); "
                              f"one walk down the ranking compares records in one embedding")


def _check_trained_models(cfg: dict, known: set[str], sizes: set[str]) -> None:
    """A signal's ``trained:VARIANT-SIZE`` names a variant this config can train (a seeded one
    too) at one of its training sizes."""
    from alpagasus.core.model_files import ModelFileError, is_trained, trained_name

    for name, signal in (cfg.get("signals") or {}).items():
        for key in ("model", "tokenizer"):
            spec = (signal or {}).get(key)
            if not is_trained(spec):
                continue
            where = f"config signals.{name}.{key}"
            try:
                variant, size = trained_name(spec)
            except ModelFileError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            unseeded = re.sub(r"_seed\d+$", "", variant)
            if unseeded not in known and not re.fullmatch(r"random_k\d+", unseeded):
                raise ConfigError(f"{where}: {spec!r} names variant {variant!r}, which is neither alpagasus/alpaca/"
                                  f"random nor a selection.extra or selection.selectors name")
            if size not in sizes:
                raise ConfigError(f"{where}: {spec!r} names size {size!r}, which is not under training.sizes "
                                  f"({', '.join(sorted(sizes)) or 'none'})")


def _is_local_path(value: str) -> bool:
    """A path, as opposed to a hub id (`org/name`): absolute, or starting with ., .. or ~."""
    return value.startswith(("/", "./", "../", "~"))


def _check_gguf(key: str, value) -> None:
    """A GGUF base model is converted by the workflow (rule convert_gguf), so it must be there."""
    from alpagasus.core.model_files import GGUFError, is_gguf, locate

    if not is_gguf(value):
        return
    try:
        locate(value)
    except GGUFError as exc:
        raise ConfigError(f"config {key}: {exc}") from None


def _check_size_paths(name: str, size: dict) -> None:
    """Files a training size names must exist before hours of GPU time are queued for it."""
    from alpagasus.core.model_files import is_gguf

    for key in ("base_model", "tokenizer"):
        value = size.get(key)
        if key == "base_model" and is_gguf(value):
            continue  # _check_gguf (a package: name is not a path)
        if isinstance(value, str) and _is_local_path(value) and not Path(value).expanduser().exists():
            raise ConfigError(f"config training.sizes.{name}.{key}: {value} does not exist "
                              f"(a local path; a hub id is written org/name)")
    fsdp = size.get("fsdp_config")
    if fsdp:
        path = Path(fsdp).expanduser()
        path = path if path.is_absolute() else REPO / path  # relative to the repository
        if not path.is_file():
            raise ConfigError(f"config training.sizes.{name}.fsdp_config: {path} does not exist")


def structured_output_conflict(name: str, judge_cfg: dict) -> str | None:
    """Why judge ``name`` cannot ask for structured output (judging/structured.py), or None."""
    if judge_cfg.get("structured_output") and judge_cfg.get("score_mode") == "logprobs":
        return (f"config judges.{name}: structured_output: true with score_mode: logprobs (the expected score "
                f"is read from the first token's probabilities, and a JSON reply starts with '{{'); choose one")
    return None


# Judges that run a model of their own (a hub id or a local directory, its weights hashed).
LOCAL_MODEL_BACKENDS = ("transformers", "vllm")


def _check_judge_paths(name: str, judge: dict) -> None:
    """A local judge model must be there before a rating job is queued for it."""
    if judge.get("backend") not in LOCAL_MODEL_BACKENDS:
        return
    model, gguf_file = judge.get("model"), judge.get("gguf_file")
    if isinstance(model, str) and _is_local_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigError(f"config judges.{name}.model: {model} "
                              f"{'is not a directory' if path.exists() else 'does not exist'} "
                              f"(a local model directory; a hub id is written org/name)")
        if gguf_file and not (path / gguf_file).is_file():
            raise ConfigError(f"config judges.{name}.gguf_file: {path / gguf_file} does not exist")


def load(*paths: str | Path) -> dict:
    """config/config.yaml merged with overlays, validated."""
    files = paths or (REPO / "config" / "config.yaml",)
    cfg = merge_overlays({}, [(str(p), read_yaml(p)) for p in files])
    return validate(cfg)
