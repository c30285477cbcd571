"""A source's rows onto the pipeline's records: instruction, input and output, the source's
other columns as they were, and ``source_row``, the row each record came from.

Two shapes of source are understood (``data.format``):
- ``alpaca``: one column each for instruction, input and output, named by ``data.fields``
  (Dolly: instruction, context, response); ``input: null`` when the set has no input column.
- ``messages``: chat records, a list of ``{role, content}`` (ShareGPT's ``{from, value}`` with
  human/gpt too), an optional system message first. The user turn becomes the instruction and
  the assistant's reply the output; the system message is kept as ``system``. A conversation
  of more than one exchange cannot be one record: an error naming the row, or, with
  ``data.multi_turn: drop``, left out and counted.

Every error is one line naming the file or dataset, the row (counted from 0, as source_row)
and the column, and nothing is written unless every row passed.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter

from alpagasus.core.config import filled
from alpagasus.data import FIELDS, DataError, not_utf8
from alpagasus.data.sources import SourceRows

SOURCE_ROW = "source_row"
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def to_records(source: SourceRows, data_cfg: dict) -> tuple[list[dict], dict]:
    """The validated records of ``source``, and what was left out (counts by reason)."""
    dropped: Counter = Counter()
    records = list(iter_records_of(source, data_cfg, dropped))
    return records, dict(dropped)


def iter_records_of(source: SourceRows, data_cfg: dict, dropped: Counter):
    """:func:`to_records` one record at a time (the data rule at scale: the records are written
    as they come, never held); ``dropped`` counts what was left out, by reason. The errors are
    to_records', each raised when its row is reached (so before anything is renamed into place
    by a writer that only finishes after the last record)."""
    data_cfg = filled("data", data_cfg)
    fmt = data_cfg["format"]
    if not source.rows:
        raise DataError(f"{source.origin}: the source holds no rows")
    if fmt == "alpaca":
        convert, consumed, added, output_where = _columns_converter(source, data_cfg["fields"])
    elif fmt == "messages":
        convert, consumed, added, output_where = _messages_converter(source, data_cfg["messages_column"],
                                                                     data_cfg["multi_turn"])
    else:  # the schema rejects this first; kept for library callers
        raise DataError(f"config data.format: unknown value {fmt!r} (alpaca, messages)")
    extras = [c for c in source.columns if c not in consumed]
    for name in (*added, SOURCE_ROW):
        if name in extras:
            raise DataError(f"{source.origin}: column {name!r} would be overwritten by the record's own "
                            f"{name!r}; rename or remove it in the source")
    empty_output = data_cfg["empty_output"]

    kept = 0
    for i, row in enumerate(source.rows):
        if not isinstance(row, dict):
            raise DataError(f"{source.origin}: row {i}: expected an object, got {type(row).__name__}")
        for c in (*consumed, *extras):
            if c in row and (problem := not_utf8(row[c])) is not None:
                raise DataError(f"{source.origin}: row {i}: column {c!r}: {problem}")
        rec = convert(i, row)
        if rec is None:
            dropped["multi_turn"] += 1
            continue
        if not rec["output"].strip():
            if empty_output == "drop":
                dropped["empty_output"] += 1
                continue
            if empty_output == "error":
                raise DataError(f"{source.origin}: row {i}: {output_where}: empty "
                                f"(data.empty_output: keep rates it, drop leaves it out)")
        for c in extras:
            if c in row:
                rec[c] = _json_value(source.origin, i, c, row[c])
        rec[SOURCE_ROW] = i
        kept += 1
        yield rec
    if not kept:
        raise DataError(f"{source.origin}: no record left of {len(source.rows)} rows ({dict(dropped)} dropped)")


def _columns_converter(source: SourceRows, fields: dict):
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DataError(f"config data.fields: unknown field(s) {', '.join(unknown)} (instruction, input, output)")
    for target in FIELDS:
        column = fields[target]
        if column is None and target == "input":
            continue
        if column not in source.columns:
            raise DataError(f"{source.origin}: column {column!r} (data.fields.{target}) does not exist "
                            f"(columns: {', '.join(source.columns) or 'none'})")
    mapped = [(t, fields[t]) for t in FIELDS if fields[t] is not None]

    def convert(i: int, row: dict) -> dict:
        rec = {"instruction": "", "input": "", "output": ""}
        for target, column in mapped:
            where = f"{source.origin}: row {i}: column {column!r}" + ("" if column == target else f" ({target})")
            if column not in row:
                raise DataError(f"{where}: missing")
            value = row[column]
            if value is None:
                raise DataError(f"{where}: null, expected a string")
            if not isinstance(value, str):
                raise DataError(f"{where}: expected a string, got {type(value).__name__}")
            rec[target] = value
        if not rec["instruction"].strip():
            raise DataError(f"{source.origin}: row {i}: column {fields['instruction']!r}"
                            + ("" if fields["instruction"] == "instruction" else " (instruction)") + ": empty")
        return rec

    output = fields["output"]
    output_where = f"column {output!r}" + ("" if output == "output" else " (output)")
    return convert, [c for _, c in mapped], list(FIELDS), output_where


def _messages_converter(source: SourceRows, column: str, multi_turn: str):
    if column not in source.columns:
        raise DataError(f"{source.origin}: column {column!r} (data.messages_column) does not exist "
                        f"(columns: {', '.join(source.columns) or 'none'})")

    def convert(i: int, row: dict) -> dict | None:
        where = f"{source.origin}: row {i}: column {column!r}"
        value = row.get(column)
        if not isinstance(value, list) or not value:
            raise DataError(f"{where}: expected a non-empty list of {{role, content}} messages, got "
                            f"{'null' if value is None else type(value).__name__}")
        turns = []
        for j, msg in enumerate(value):
            if not isinstance(msg, dict):
                raise DataError(f"{where}: message {j}: expected an object, got {type(msg).__name__}")
            role = msg.get("role", msg.get("from"))
            content = msg.get("content", msg.get("value"))
            if not isinstance(role, str):
                raise DataError(f"{where}: message {j}: no role")
            if not isinstance(content, str):
                raise DataError(f"{where}: message {j} ({role}): content is "
                                f"{'null' if content is None else type(content).__name__}, expected a string")
            turns.append((SHAREGPT_ROLES.get(role, role), content))
        system = turns.pop(0)[1] if turns[0][0] == "system" else ""
        roles = [r for r, _ in turns]
        if len(turns) > 2:
            if multi_turn == "drop":
                return None
            raise DataError(f"{where}: a multi-turn conversation ({len(turns)} messages after the system "
                            f"message: {', '.join(roles)}); one record holds one user turn and one reply "
                            f"(data.multi_turn: drop leaves such rows out, counted)")
        if roles != ["user", "assistant"]:
            raise DataError(f"{where}: expected a user turn then an assistant turn (after an optional system "
                            f"message), got {', '.join(roles) or 'no turns'}")
        if not turns[0][1].strip():
            raise DataError(f"{where}: the user turn is empty")
        return {"instruction": turns[0][1], "input": "", "output": turns[1][1], "system": system}

    return convert, [column], [*FIELDS, "system"], f"column {column!r}: the assistant turn"


def _json_value(origin: str, i: int, column: str, value):
    """An extra column's value as JSON can hold it (dates and times as ISO text)."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        pass

    def iso(v):
        if isinstance(v, (datetime.date, datetime.time)):
            return v.isoformat()
        raise TypeError(f"a {type(v).__name__} value")

    try:
        return json.loads(json.dumps(value, default=iso, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{origin}: row {i}: column {column!r}: JSON cannot hold it ({exc}); "
                        f"convert or remove the column") from None
