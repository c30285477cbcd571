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

import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from alpagasus.core.io import atomic_open

FIELDS = ("instruction", "input", "output")


class DataError(ValueError):
    """A data file that cannot be used; the message names file, record and field."""


def _where(path, index=None, field=None, lines=None, line=None) -> str:
    parts = [str(path)]
    if index is not None:
        if line is None and lines:
            line = lines[index]
        parts.append(f"record {index}" + (f" (line {line})" if line is not None else ""))
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)


def validate_records(records, path="<records>", lines=None) -> list[dict]:
    """Check that ``records`` is a non-empty list of {instruction, input, output} string dicts.

    Extra keys are allowed and kept (Dolly's ``category``, say); ``input`` may be empty.
    ``lines``: each record's line in a JSONL file, named beside the record in every error.
    """
    if not isinstance(records, list):
        raise DataError(f"{_where(path)}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{_where(path)}: the file holds no records")
    for i, rec in enumerate(records):
        validate_record(rec, i, path, lines[i] if lines else None)
    return records


def validate_record(rec, i: int, path="<records>", line: int | None = None) -> dict:
    """One record of :func:`validate_records` (record ``i``, on ``line`` of a JSONL file)."""
    if not isinstance(rec, dict):
        raise DataError(f"{_where(path, i, line=line)}: expected an object, got {type(rec).__name__}")
    for field in FIELDS:
        if field not in rec:
            raise DataError(f"{_where(path, i, field, line=line)}: missing (every record needs {', '.join(FIELDS)})")
        if not isinstance(rec[field], str):
            raise DataError(
                f"{_where(path, i, field, line=line)}: expected a string, got {type(rec[field]).__name__}"
            )
    if not rec["instruction"].strip():
        raise DataError(f"{_where(path, i, 'instruction', line=line)}: empty")
    for field, value in rec.items():
        if (problem := not_utf8(value)) is not None:
            raise DataError(f"{_where(path, i, field, line=line)}: {problem}")
    return rec


def not_utf8(value) -> str | None:
    """What keeps ``value`` (a string, or a list or object of them) out of a UTF-8 file: a lone
    UTF-16 surrogate, which JSON's "\\ud800" allows and UTF-8 cannot encode; None if nothing.
    We do not repair it: the judge would rate a record that is not the one in the file."""
    stack, inside = [value], False
    while stack:  # a loop, not recursion: a value may be nested as deep as the JSON reader allows
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                at = f"character {exc.start}" + (" of a string inside it" if inside else "")
                return (f"{at} is a lone UTF-16 surrogate (U+{ord(v[exc.start]):04X}, from a broken \\u "
                        f"escape in the source), which no UTF-8 file can hold; fix or drop the record")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
            inside = True
        elif isinstance(v, list):
            stack.extend(v)
            inside = True
    return None


def read_text(path: Path) -> str:
    """A data file's text: UTF-8, not empty."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_json(text: str, path):
    """One JSON document; a syntax error, or nesting deeper than Python's JSON reader can hold
    (a RecursionError inside ``json.loads``), is one line naming the file and the line."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _json_error(exc, text, path) from None


def _json_error(exc: Exception, text: str, path) -> DataError:
    if isinstance(exc, RecursionError):
        depth, line = _deepest(text)
        return DataError(f"{path}: line {line}: {_too_deep(depth)}")
    return DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")


def _too_deep(depth: int) -> str:
    return (f"arrays or objects nested {depth:,} deep, more than the JSON reader can hold (about "
            f"{sys.getrecursionlimit():,}); fix or drop that value")


def parse_jsonl(text: str, path, unit: str = "record") -> tuple[list, list[int]]:
    """The values of a JSONL text, one a non-blank line, and the line each came from.
    ``unit`` is what an error calls a value: "record" (load_records) or "row" (a source)."""
    rows, lines = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines are not rows
        where = f"{path}: line {lineno} ({unit} {len(rows)})"
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{where}: {_too_deep(_deepest(line)[0])}") from None
        lines.append(lineno)
    return rows, lines


def _deepest(text: str) -> tuple[int, int]:
    """The deepest nesting of arrays and objects in a JSON text, and the line where it is."""
    depth = best = at = 0
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best, at = depth, i
        elif ch in "]}":
            depth -= 1
    return best, text.count("\n", 0, at) + 1


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read and validate an Alpaca-format file: a JSON list of records, or JSONL (one record a
    line: a ``.jsonl`` file, or any file whose text is one JSON object a line)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a directory, not a records file (a JSON list of records, or JSONL: "
                        f"one record a line)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_text(path)
    if path.suffix.lower() != ".jsonl":
        try:
            records = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            if not _is_jsonl(exc, text):
                raise _json_error(exc, text, path) from None
        else:
            return validate_records(records, path)
    records, lines = parse_jsonl(text, path)
    return validate_records(records, path, lines)


def _is_jsonl(exc: Exception, text: str) -> bool:
    """A second JSON value after a first object that fills the first line: JSONL. (A JSON
    document holds one value, so this is never a JSON file with something else wrong.)"""
    if not (isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data"):
        return False
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records the way Alpaca ships them (indent 4), atomically."""
    with atomic_open(path) as fh:
        json.dump(records, fh, indent=4, ensure_ascii=False)
        fh.write("\n")


def record_key(rec: dict) -> tuple[str, str, str]:
    return (rec["instruction"], rec["input"], rec["output"])


def content_hash(rec: dict) -> str:
    """sha256 of a record's instruction, input and output: the record matched by content (a
    released selection against ours, a signal file's line against its record)."""
    return hashlib.sha256("\x1f".join(record_key(rec)).encode("utf-8")).hexdigest()


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
