"""Configuration outside Snakemake (the CLI), and the checks a JSON schema cannot express."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "config" / "schema.yaml"
BUILTIN_VARIANTS = {"alpagasus", "alpaca", "random"}


class ConfigError(ValueError):
    pass


def merge(base: dict, over: dict) -> dict:
    """Deep merge, as Snakemake merges --configfile overlays."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_yaml(path: str | Path) -> dict:
    """A config file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
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
    if error.validator == "additionalProperties":
        message = message.replace("Additional properties are not allowed", "unknown key(s)")
    if len(message) > 300:  # never dump a whole sub-config into one line
        message = message[:300] + " ..."
    return f"config {where}: {message}"


def validate(cfg: dict, schema_path: str | Path = SCHEMA) -> dict:
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if errors:
        # The deepest, most specific error: the key that is wrong, not the mapping holding it.
        raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    check_references(cfg)
    return cfg


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
    known = BUILTIN_VARIANTS | set((cfg.get("selection") or {}).get("extra") or {})
    refs = set((cfg.get("evaluation") or {}).get("references") or {})
    for v in (cfg.get("training") or {}).get("variants") or []:
        if v not in known:
            raise ConfigError(f"config training.variants: {v!r} is neither alpagasus/alpaca/random nor a selection.extra name")
    sizes = set(((cfg.get("training") or {}).get("sizes") or {}))
    for s in (cfg.get("evaluation") or {}).get("sizes") or []:
        if sizes and s not in sizes:
            raise ConfigError(f"config evaluation.sizes: {s!r} is not under training.sizes ({', '.join(sorted(sizes))})")
    for a, b in (cfg.get("evaluation") or {}).get("comparisons") or []:
        for v in (a, b):
            if v not in known | refs:
                raise ConfigError(f"config evaluation.comparisons: {v!r} is not a variant or a reference")
    for name, size in ((cfg.get("training") or {}).get("sizes") or {}).items():
        _check_size_paths(name, size or {})


def _is_local_path(value: str) -> bool:
    """A path, as opposed to a hub id (`org/name`): absolute, or starting with ., .. or ~."""
    return value.startswith(("/", "./", "../", "~"))


def _check_size_paths(name: str, size: dict) -> None:
    """Files a training size names must exist before hours of GPU time are queued for it."""
    for key in ("base_model", "tokenizer"):
        value = size.get(key)
        if isinstance(value, str) and _is_local_path(value) and not Path(value).expanduser().exists():
            raise ConfigError(f"config training.sizes.{name}.{key}: {value} does not exist "
                              f"(a local path; a hub id is written org/name)")
    fsdp = size.get("fsdp_config")
    if fsdp:
        path = Path(fsdp).expanduser()
        path = path if path.is_absolute() else REPO / path  # relative to the repository
        if not path.is_file():
            raise ConfigError(f"config training.sizes.{name}.fsdp_config: {path} does not exist")


def load(*paths: str | Path) -> dict:
    """config/config.yaml merged with overlays, validated."""
    cfg: dict = {}
    for p in paths or (REPO / "config" / "config.yaml",):
        cfg = merge(cfg, read_yaml(p))
    return validate(cfg)
