"""Reading the per-record signal files a selector ranks by, checked against the records.

The files (docs/selection.md, "Selectors"): ``{R}/signals/{name}.jsonl``, one JSON
object a line in record order with ``index``, ``value`` (a number, or null where it could not be
computed) and ``record_sha256`` (:func:`alpagasus.selection.agreement.content_hash` of the
record); and for an embedding, ``{R}/signals/{name}.npy`` (float16, one L2-normalised row per
record) beside its ``.jsonl``. A file that does not match the records (count, order, content)
would silently rank other records than the ones selected: each check stops with one line
naming the file and the line.

(Kept apart from ``alpagasus.selection.signals``, where the signals are computed, so that the
selectors and the signals could be written at the same time; the two meet in the file format.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from alpagasus.selection.agreement import content_hash

# An embedding row is L2-normalised up to float16's rounding (a relative error of ~5e-4 per
# component); a row further from norm 1 than this was not normalised.
NORM_TOLERANCE = 1e-2


class SignalFileError(ValueError):
    """A signal file that does not belong to the records; the message names the file."""


def record_hashes(records: list[dict]) -> list[str]:
    return [content_hash(r) for r in records]


def read_signal(path, hashes: list[str], records_path="the records") -> list[float | None]:
    """The ``value`` of each record from ``path``, after checking that the file has one line per
    record, in record order, each for the same record content as ``hashes``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SignalFileError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SignalFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(hashes):
        raise SignalFileError(f"{path}: {len(lines)} lines for the {len(hashes)} records of {records_path}: "
                              f"the signal was computed on another data set (recompute it)")
    values: list[float | None] = []
    for i, line in enumerate(lines):
        where = f"{path}: line {i + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SignalFileError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise SignalFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if row.get("index") != i or isinstance(row.get("index"), bool):
            raise SignalFileError(f"{where}: index {row.get('index')!r}, expected {i}: the lines are not in record order")
        if row.get("record_sha256") != hashes[i]:
            raise SignalFileError(f"{where}: record_sha256 {row.get('record_sha256')!r} is not that of record {i} of "
                                  f"{records_path}: the signal was computed on other records (recompute it)")
        if "value" not in row:
            raise SignalFileError(f"{where}: no field 'value'")
        value = row["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise SignalFileError(f"{where}: field 'value' is {value!r}: expected a finite number, or null where "
                                  f"the signal could not be computed")
        values.append(None if value is None else float(value))
    return values


def read_embedding(npy_path, jsonl_path, hashes: list[str], records_path="the records") -> np.ndarray:
    """The embedding rows as float32 unit vectors, row i = record i: its ``.jsonl`` checked as
    :func:`read_signal` does, the array's shape against the records and each row's norm."""
    read_signal(jsonl_path, hashes, records_path)
    npy_path = Path(npy_path)
    try:
        emb = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SignalFileError(f"{npy_path}: not a NumPy array file ({str(exc).splitlines()[0]})") from None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
        raise SignalFileError(f"{npy_path}: a {emb.ndim}-D {emb.dtype} array; expected a 2-D float array "
                              f"(records x dimensions)")
    if emb.shape[0] != len(hashes):
        raise SignalFileError(f"{npy_path}: {emb.shape[0]} rows for the {len(hashes)} records of {records_path}: "
                              f"the embedding is of another data set (recompute it)")
    emb = emb.astype(np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise SignalFileError(f"{npy_path}: row {int(np.flatnonzero(~finite)[0])} is not finite")
    norms = np.linalg.norm(emb, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise SignalFileError(f"{npy_path}: row {row} has norm {norms[row]:.4g}, expected 1 (the rows must be "
                              f"L2-normalised)")
    # float16 rounding leaves norms a little off 1; cosines are exact inner products only of unit rows.
    emb /= norms[:, None]
    return emb
