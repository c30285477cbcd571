"""The record contract: instruction data in Alpaca's format, validated, with exactly what is wrong.

Every stage reads records through this package. Where they come from is ``acquire`` (the data
rule: download, local files and the Hub through ``sources``, column mapping through ``mapping``,
the offline ``miniature``); the test sets are ``testsets``; how a record becomes a prompt for
training and generation is ``template``.

A bad record must never reach a paid judge, and a bad file must never half-replace a good
output, so every check names the file, the record index and the field, and nothing is written
until the whole file has passed.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from alpagasus.core.io import atomic_open

FIELDS = ("instruction", "input", "output")


class DataError(ValueError):
    """A data file that cannot be used; the message names file, record and field."""


def _where(path, index=None, field=None) -> str:
    parts = [str(path)]
    if index is not None:
        parts.append(f"record {index}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)


def validate_records(records, path="<records>") -> list[dict]:
    """Check that ``records`` is a non-empty list of {instruction, input, output} string dicts.

    Extra keys are allowed and kept (Dolly's ``category``, say); ``input`` may be empty.
    """
    if not isinstance(records, list):
        raise DataError(f"{_where(path)}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{_where(path)}: the file holds no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{_where(path, i)}: expected an object, got {type(rec).__name__}")
        for field in FIELDS:
            if field not in rec:
                raise DataError(f"{_where(path, i, field)}: missing (every record needs {', '.join(FIELDS)})")
            if not isinstance(rec[field], str):
                raise DataError(
                    f"{_where(path, i, field)}: expected a string, got {type(rec[field]).__name__}"
                )
        if not rec["instruction"].strip():
            raise DataError(f"{_where(path, i, 'instruction')}: empty")
        for field, value in rec.items():
            if isinstance(value, str) and (at := _lone_surrogate(value)) is not None:
                raise DataError(
                    f"{_where(path, i, field)}: character {at} is a lone UTF-16 surrogate "
                    f"(U+{ord(value[at]):04X}, from a broken \\u escape in the source), which no "
                    f"UTF-8 file can hold; fix or drop the record")
    return records


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (JSON allows "\\ud800"; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read and validate an Alpaca-format JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        records = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    return validate_records(records, path)


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records the way Alpaca ships them (indent 4), atomically."""
    with atomic_open(path) as fh:
        json.dump(records, fh, indent=4, ensure_ascii=False)
        fh.write("\n")


def record_key(rec: dict) -> tuple[str, str, str]:
    return (rec["instruction"], rec["input"], rec["output"])


def duplicate_groups(records: list[dict]) -> list[list[int]]:
    """Groups of indices whose (instruction, input, output) are identical (size >= 2)."""
    seen: dict[tuple, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        seen[record_key(rec)].append(i)
    return [idx for idx in seen.values() if len(idx) > 1]


def oversized_fields(records: list[dict], max_chars: int) -> list[tuple[int, str, int]]:
    """(index, field, length) for every field longer than ``max_chars``."""
    return [
        (i, f, len(rec[f])) for i, rec in enumerate(records) for f in FIELDS if len(rec[f]) > max_chars
    ]
