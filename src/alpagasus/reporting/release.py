"""A selection ready for the Hugging Face Hub: ``{R}/release/{name}/`` (rule ``release``).

    release/alpagasus/
        README.md                           the dataset card: Hub metadata, then how it was made
        data/train-00000-of-00001.parquet   the records (the card's ``configs`` points here)
        filtered_9k.json                    the same records in the JSON users know (its name in the run)

``datasets.load_dataset("release/alpagasus")`` loads the Parquet split the card names;
``alpagasus publish --selection alpagasus --repo ORG/NAME`` uploads the directory as a dataset
repository (``huggingface_hub``, token from ``HF_TOKEN``). The card says where the records came
from (the source and its sha256 or revision), which judge rated them with which prompt version,
the rule that kept them, how many, their score histogram and their verbosity audit
(selection/verbosity.py), so a user of the Hub copy can tell what it is without this pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from alpagasus.core.io import read_jsonl, sha256_file
from alpagasus.data import content_hash, load_records
from alpagasus.selection import verbosity

PARQUET = "data/train-00000-of-00001.parquet"
# The Hub's size buckets (its dataset-card metadata).
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(n: int) -> str:
    return next((label for bound, label in _SIZES if n < bound), "n>1T" if n >= 10**12 else "100M<n<1B")


def kept_indices(records: list[dict], kept: list[dict], where: str) -> list[int]:
    """Where each kept record stands in the full set (a record kept twice is two equal records of
    the set, taken in order)."""
    positions: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        positions.setdefault(content_hash(rec), []).append(i)
    out = []
    for j, rec in enumerate(kept):
        free = positions.get(content_hash(rec))
        if not free:
            raise ValueError(f"{where}: record {j} is not in the instruction set it was selected from")
        out.append(free.pop(0))
    return out


def _histogram(scores: list[float | None]) -> list[tuple[str, int]]:
    counts = Counter("unscored" if s is None else f"{s:g}" for s in scores)
    return sorted(counts.items(), key=lambda kv: (kv[0] == "unscored", float(kv[0]) if kv[0] != "unscored" else 0))


def card(*, name: str, n_kept: int, n_all: int, how: str, source: dict, judge: dict, histogram: list,
         audit: dict, license_: str, language: list[str], columns: list[str]) -> str:
    """The dataset card: YAML metadata the Hub reads, then the provenance in prose and tables."""
    import yaml

    meta = {
        "license": license_ or "unknown",
        "language": list(language),
        "task_categories": ["text-generation"],
        "size_categories": [size_category(n_kept)],
        "pretty_name": f"AlpaGasus-style selection: {name}",
        "tags": ["alpagasus", "instruction-tuning", "data-selection"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    kq, aq = audit["kept"], audit["all"]
    lk = audit["longest_k"]
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {name}: {n_kept:,} of {n_all:,} instruction records", "",
        f"{how.capitalize()}, out of an instruction set of {n_all:,} records, by the alpagasus pipeline "
        "(a reproduction of AlpaGasus, Chen et al. 2023: rate every record with an LLM judge, keep the best).", "",
        f"Columns: {', '.join(f'`{c}`' for c in columns)} (Alpaca's format; `input` may be empty).", "",
        "## Provenance", "",
        "| | |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in source.items()],
        *[f"| {k} | {v} |" for k, v in judge.items()],
        f"| rule | {how} |",
        f"| records kept | {n_kept:,} of {n_all:,} ({n_kept / n_all:.1%}) |" if n_all else f"| records kept | {n_kept:,} |",
        "",
        "## Scores of the kept records", "",
        "| score | records |", "|---|---|", *[f"| {s} | {c:,} |" for s, c in histogram], "",
        "## Verbosity audit", "",
        f"Response length ({audit['length_unit']}): kept median {kq['median']:g} (quartiles {kq['q1']:g}-{kq['q3']:g}, "
        f"mean {kq['mean']:g}) against the whole set's median {aq['median']:g} ({aq['q1']:g}-{aq['q3']:g}, mean "
        f"{aq['mean']:g}). Overlap with the {lk['k']:,} longest responses: {lk['overlap']:,} records "
        f"(share {lk['share']:.3f}; a random selection of that size has {lk['share_if_random']:.3f} on average)."
        if kq["median"] is not None else "Nothing kept.", "",
        "## License", "",
        f"`{meta['license']}`, carried from the source data set (config `data.license`): the selection is a subset "
        "of it and adds no text of its own.", "",
    ]
    return "\n".join(lines)


def how_made(name: str, selection_cfg: dict, seed: int) -> str:
    """The rule that made selection ``name``, as a reader says it ("the records with score >= 4.5")."""
    from alpagasus.reporting.report import rule_in_words

    if name == "alpagasus":
        return f"{rule_in_words(selection_cfg)}, as rated by the judge"
    if name == "random":
        return f"a random sample (seed {seed}) of as many records as the judge's selection kept"
    if name in (selection_cfg.get("extra") or {}):
        return f"{rule_in_words(selection_cfg['extra'][name])}, as rated by the judge"
    selector = (selection_cfg.get("selectors") or {}).get(name)
    if selector is None:
        raise ValueError(f"release {name!r}: not a selection (alpagasus, random, selection.extra or "
                         f"selection.selectors)")
    words = rule_in_words(selector, field=selector["signal"])
    if selector.get("diversity"):
        words += f", walking that ranking through DEITA's diversity filter over {selector['diversity']['embedding']}"
    if selector.get("dedupe"):
        words += f", near-duplicates under {selector['dedupe']['embedding']} removed"
    return words


def write_release(selection_path, records_path, scores_path, out_dir, *, name: str, how: str,
                  source: dict, license_: str | None, language: list[str], rating_cost_path=None) -> dict:
    """Write ``out_dir`` (the card, the Parquet split, the JSON) in one rename: a reader sees the
    whole release or none. Returns what the card says in numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept = load_records(selection_path)
    records = load_records(records_path)
    scores = {int(r["index"]): r.get("score") for r in read_jsonl(scores_path)}
    where = kept_indices(records, kept, str(selection_path))
    judge = {}
    if rating_cost_path and Path(rating_cost_path).exists():
        cost = json.loads(Path(rating_cost_path).read_text(encoding="utf-8"))
        judge = {"judge": f"`{cost.get('judge')}` (model `{cost.get('model')}`)",
                 "dimension rated": cost.get("dimension"), "judge prompt version": f"`{cost.get('prompt_version')}`"}
    src = {"source": source.get("origin") or source.get("source"),
           **({"source revision": f"`{source['revision']}`"} if source.get("revision") else {}),
           **({"source sha256": f"`{source['sha256']}`"} if source.get("sha256") else {}),
           "records file sha256": f"`{sha256_file(records_path)}`"}
    columns = list(dict.fromkeys(k for rec in kept for k in rec)) or ["instruction", "input", "output"]
    audit = verbosity.audit(records, where)
    hist = _histogram([scores.get(i) for i in where])
    text = card(name=name, n_kept=len(kept), n_all=len(records), how=how, source=src, judge=judge, histogram=hist,
                audit=audit, license_=license_ or "unknown", language=language, columns=columns)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "data").mkdir()
        table = pa.Table.from_pylist([{c: rec.get(c) for c in columns} for rec in kept])
        pq.write_table(table, tmp / PARQUET)
        (tmp / Path(selection_path).name).write_text(json.dumps(kept, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(text, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"name": name, "kept": len(kept), "records": len(records), "histogram": dict(hist), "audit": audit}


def publish(release_dir, repo: str, *, private: bool = False, token_env: str = "HF_TOKEN") -> str:
    """Upload ``release_dir`` as the dataset repository ``repo`` (created if absent); returns its
    URL. The token comes from ``$HF_TOKEN`` only and is never printed or written."""
    release = Path(release_dir)
    if not (release / "README.md").is_file() or not (release / PARQUET).is_file():
        raise FileNotFoundError(f"{release}: no release here (README.md and {PARQUET}); make it first with "
                                f"`snakemake {release}`")
    token = os.environ.get(token_env)
    if not token:
        raise KeyError(f"publish needs a Hugging Face token with write access in ${token_env} "
                       "(huggingface.co/settings/tokens); it is read from the environment only")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(release), repo_id=repo, repo_type="dataset",
                      commit_message=f"alpagasus release of {release.name}")
    return f"https://huggingface.co/datasets/{repo}"
