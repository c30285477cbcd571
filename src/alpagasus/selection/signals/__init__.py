"""Per-record signals: one value a record, each from its own rule, for selectors to rank by.

The file (``{R}/signals/{name}.jsonl``): one JSON object a line, in record order, for every
record of ``{R}/alpaca_52k.json``, with at least ``index`` (0..n-1), ``value`` (a number, or null
where it could not be computed, with a ``reason``) and ``record_sha256``
(alpagasus.data.content_hash of the record); each kind adds its own fields. An embedding is
``{R}/signals/{name}.npy`` (float16, L2-normalised, row i = record i) with the same JSONL beside
it (``value`` null), so its records are checked the same way.

Kinds (docs/selection.md "Signals"): ``ifd`` and ``perplexity`` (ifd.py), ``length``
(length.py), ``embedding`` (embedding.py). What costs compute is cached per record under the
cache dir by what the model is (cache.py), so new records, or a signal file removed, compute only
what was never computed.

A file that does not match the records (count, order, content) is refused with one line naming
the file: a selection never ranks records by another set's values.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

from alpagasus.core.io import atomic_open
from alpagasus.data import content_hash


class SignalError(ValueError):
    """A signal that cannot be computed or a signal file that does not fit its records; the
    message names the file (or the signal), the record and the field."""


def row(index: int, record: dict, value: float | None, **fields) -> dict:
    """One line of a signal file."""
    if value is not None and not math.isfinite(value):
        value, fields = None, {"reason": f"not finite ({value})", **fields}
    return {"index": index, "record_sha256": content_hash(record), "value": value, **fields}


def write_signal(path: str | os.PathLike, rows: list[dict]) -> None:
    """The JSONL file, whole or not at all (a temporary file, then renamed)."""
    with atomic_open(path) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")


def record_hashes(records: list[dict]) -> list[str]:
    """What each line of a signal file must carry as ``record_sha256``, in record order."""
    return [content_hash(r) for r in records]


def read_signal(path: str | os.PathLike, records: list[dict] | None = None, *, records_path=None,
                hashes=None) -> list[dict]:
    """The lines of a signal file, checked against ``records`` (or their ``hashes``): one line a
    record, in order (``index``), each computed on that record (``record_sha256``), with a
    number or null as ``value``. Anything else is a SignalError naming the file and the line
    (``records_path`` names the records in the message)."""
    return list(iter_signal(path, record_hashes(records) if hashes is None else hashes, records_path=records_path))


def iter_signal(path: str | os.PathLike, hashes, *, records_path=None) -> Iterator[dict]:
    """:func:`read_signal`'s lines one at a time, each checked as it is read; the line count is
    checked first, in a pass that holds nothing. ``hashes``: the records' content hashes in hex
    (a list), or the records' index (alpagasus.data.stream.RecordsIndex: read a chunk at a time),
    so that a signal over 10M records is never held."""
    path = Path(path)
    of = f" of {records_path}" if records_path else ""
    hash_at = hashes.hash_hex if hasattr(hashes, "hash_hex") else hashes.__getitem__
    n_lines = _count_lines(path)
    if n_lines != len(hashes):
        raise SignalError(f"{path}: {n_lines} lines for the {len(hashes)} records{of} (a signal "
                          f"file has one line per record, in record order: recompute it for these records)")
    with open(path, "rb") as fh:
        offset = 0
        for i in range(n_lines):
            raw = fh.readline()
            where = f"{path}: line {i + 1}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SignalError(f"{path}: not UTF-8 text (byte {offset + exc.start})") from None
            offset += len(raw)
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SignalError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(r, dict):
                raise SignalError(f"{where}: expected an object, got {type(r).__name__}")
            if r.get("index") != i or isinstance(r.get("index"), bool):
                raise SignalError(f"{where}: index {r.get('index')!r} where {i} was expected (record order)")
            if r.get("record_sha256") != hash_at(i):
                raise SignalError(f"{where}: record_sha256 {r.get('record_sha256')!r} is not that of record {i}{of} "
                                  f"(the file was computed on other records: recompute it)")
            if "value" not in r:
                raise SignalError(f"{where}: no field 'value'")
            value = r["value"]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise SignalError(f"{where}: field 'value': {value!r} is neither a finite number nor null (null: "
                                  f"the signal could not be computed for the record)")
            yield r


def _count_lines(path: Path) -> int:
    """Lines up to the last one that is not blank (a file ends with a newline, or not), a block
    at a time. A line ends at \n only: JSON text holds no raw newline, but may hold U+2028."""
    n = last = 0
    try:
        with open(path, "rb") as fh:
            tail = b""
            while block := fh.read(1 << 24):
                lines = (tail + block).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    n += 1
                    if line.strip():
                        last = n
            if tail:
                n += 1
                if tail.strip():
                    last = n
    except FileNotFoundError:
        raise SignalError(f"{path}: no such signal file") from None
    except OSError as exc:
        raise SignalError(f"{path}: cannot read ({exc.strerror})") from None
    return last


def signal_values(path: str | os.PathLike, records: list[dict] | None = None, *, records_path=None,
                  hashes=None) -> list[float | None]:
    """The ``value`` of every record (None where it could not be computed), checked as read_signal."""
    return [None if r["value"] is None else float(r["value"])
            for r in read_signal(path, records, records_path=records_path, hashes=hashes)]


def signal_column(path: str | os.PathLike, hashes, *, records_path=None):
    """:func:`signal_values` as a float64 array, NaN where a record has none; a line at a time."""
    import numpy as np

    out = np.full(len(hashes), np.nan)
    for i, r in enumerate(iter_signal(path, hashes, records_path=records_path)):
        if r["value"] is not None:
            out[i] = r["value"]
    return out


def embedding_paths(jsonl_path: str | os.PathLike) -> tuple[Path, Path]:
    """(the .npy matrix, its .jsonl) of an embedding signal, from either."""
    p = Path(jsonl_path)
    return p.with_suffix(".npy"), p.with_suffix(".jsonl")


def write_embedding(npy_path: str | os.PathLike, jsonl_path: str | os.PathLike, matrix, rows: list[dict]) -> None:
    """The float16 matrix and its JSONL, each whole or absent (the matrix is written first: a
    JSONL is never beside a matrix it does not describe)."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float16)
    if matrix.ndim != 2 or matrix.shape[0] != len(rows):
        raise SignalError(f"{npy_path}: {matrix.shape} is not one row for each of {len(rows)} records")
    with atomic_open(npy_path, "wb", encoding=None) as fh:
        np.save(fh, matrix, allow_pickle=False)
    write_signal(jsonl_path, rows)


# An embedding row is L2-normalised up to float16's rounding (a relative error of ~5e-4 per
# component); a row further from norm 1 than this was not normalised.
NORM_TOLERANCE = 1e-2


def read_embedding(npy_path: str | os.PathLike, records: list[dict] | None = None,
                   jsonl_path: str | os.PathLike | None = None, *, records_path=None,
                   hashes=None, mmap: bool = False):
    """The (n_records, dim) float16 matrix, checked against ``records`` (or their ``hashes``)
    through its JSONL (the .jsonl beside it unless given) and for its shape, values and norms
    (a block of rows at a time). ``mmap``: the matrix memory-mapped, not read (10M records of
    384 dimensions are 7.7 GB)."""
    import numpy as np

    npy_path = Path(npy_path)
    of = f" of {records_path}" if records_path else ""
    jsonl_path = Path(jsonl_path) if jsonl_path else embedding_paths(npy_path)[1]
    if hashes is None:
        hashes = record_hashes(records)
    for _ in iter_signal(jsonl_path, hashes, records_path=records_path):
        pass
    try:
        matrix = np.load(npy_path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise SignalError(f"{npy_path}: no such embedding file") from None
    except (OSError, ValueError) as exc:
        raise SignalError(f"{npy_path}: not a NumPy array file ({str(exc).splitlines()[0]})") from None
    if matrix.ndim != 2 or matrix.shape[0] != len(hashes):
        raise SignalError(f"{npy_path}: a {matrix.ndim}-D array of shape {matrix.shape}, expected one row for each "
                          f"of the {len(hashes)} records{of} (recompute it)")
    if matrix.dtype != np.float16:
        raise SignalError(f"{npy_path}: dtype {matrix.dtype}, expected float16")
    for base in range(0, len(matrix), ROWS_CHECKED):
        wide = np.asarray(matrix[base:base + ROWS_CHECKED], dtype=np.float32)
        finite = np.isfinite(wide).all(axis=1)
        if not finite.all():
            raise SignalError(f"{npy_path}: row {base + int(np.flatnonzero(~finite)[0])} is not finite")
        norms = np.linalg.norm(wide, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
        if bad.size:
            raise SignalError(f"{npy_path}: row {base + int(bad[0])} has norm {norms[bad[0]]:.4g}, expected 1 (rows "
                              f"are L2-normalised)")
    return matrix


ROWS_CHECKED = 1 << 16  # rows of an embedding checked at a time: 100 MB of float32 at 384 dims


class UnitRows:
    """An embedding's rows as :func:`unit_rows` gives them, made only for the rows asked for
    (``rows[idx]``): the walk of a selector reads its candidates a block at a time from a
    memory-mapped matrix instead of a float32 copy of all of it."""

    def __init__(self, matrix):
        self.matrix = matrix
        self.shape = matrix.shape

    def __len__(self) -> int:
        return len(self.matrix)

    def __getitem__(self, idx):
        return unit_rows(self.matrix[idx])


def unit_rows(matrix):
    """float32 rows of norm 1: float16 rounding leaves norms a little off 1, and a cosine is an
    exact inner product only of unit rows."""
    import numpy as np

    wide = np.asarray(matrix, dtype=np.float32)
    return wide / np.linalg.norm(wide, axis=1, keepdims=True)


def text_of(record: dict, fields) -> str:
    """What an embedding reads of a record: its ``fields``, joined by a blank line (an empty one
    left out)."""
    return "\n\n".join(record[f] for f in fields if record[f])


def pick_device(device_map: str | None) -> str:
    """A signal's device: as configured, or cuda where a GPU is visible, else cpu."""
    if device_map:
        return device_map
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str):
    import torch

    return name if name == "auto" else getattr(torch, name)


# Keys of a signal that may name a GGUF file (converted by the workflow's rule convert_gguf).
MODEL_KEYS = ("model", "tokenizer")


def converted_models(signal_cfg: dict, models_dir: str, results_dir: str | None = None) -> dict[str, str]:
    """Model spec -> the directory the workflow makes it into, for each model the signal names
    that the workflow makes: a GGUF file, converted by rule convert_gguf (a training base
    model's conversion is the same directory), and ``trained:VARIANT-SIZE``, the checkpoint rule
    train writes under ``results_dir`` (the signal's rule waits for that training)."""
    from alpagasus.core.model_files import converted_name, is_gguf, is_trained, trained_checkpoint

    made = {}
    for key in MODEL_KEYS:
        spec = signal_cfg.get(key)
        if is_gguf(spec):
            made[spec] = f"{models_dir}/{converted_name(spec)}"
        elif is_trained(spec):
            if results_dir is None:
                raise SignalError(f"signal model {spec}: a trained checkpoint needs the results directory")
            made[spec] = trained_checkpoint(spec, results_dir)
    return made
