"""scores.jsonl as numpy columns, and the selection rules over them: bounded memory at 10M records.

``load_scores`` holds every row of scores.jsonl as a dict (~1 KB each, the judge's reply among
them). Selection needs a few bytes of each: its status, its score, its flags. ``ScoreColumns``
reads them a block at a time (pyarrow's JSON reader, ~6x faster than json.loads per line; a file
it cannot read, or reads differently, goes through the Python reader, which raises the errors
``load_scores`` raises), and ``select_kept`` / ``random_kept`` pick exactly the records that
``select_indices`` / ``random_indices`` pick for the same inputs (tests/test_scale.py checks both).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np


SCORE_FIELDS = ("score", "expected_score")
ARROW_BLOCK = 1 << 20  # a larger block is read ahead by more threads: more memory, no faster here


def _kind(flag: str) -> str:
    return "duplicate" if flag.startswith("duplicate_of_") else flag


class _Buffer:
    """A growing array, filled a block at a time: ``capacity`` the expected length (the record
    count), so that no list of blocks is concatenated at the end (twice the memory, briefly)."""

    def __init__(self, dtype, capacity: int | None):
        self.data = np.empty(capacity or 1024, dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), self.data.dtype)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:end] = values
        self.n = end

    def array(self) -> np.ndarray:
        return self.data[:self.n] if self.n == len(self.data) else self.data[:self.n].copy()


class ScoreColumns:
    """The columns of scores.jsonl that selection reads.

    ``status``: a code per row into ``status_values`` (first seen first; None where the row has
    no status); ``values[field]``: float64, NaN where the row holds null or no value;
    ``has_field[field]``: whether the first row has the key; ``flag_rows`` / ``flag_kinds``: one
    entry per (row, flag kind) the row carries (each kind once a row, duplicate_of_N as
    "duplicate"), kinds coded into ``kind_values``."""

    def __init__(self, path, n_records: int | None = None):
        self.path = Path(path)
        self._statuses: dict = {}   # status value -> code, first seen first
        self._flag_names: dict = {}  # flag -> code, first seen first
        self._bad_index = None       # (row, the index it holds): the first row out of order
        self._capacity = n_records
        try:
            self._read_arrow()
        except _NotArrow:
            self._read_python()
        n = len(self.status)
        if self._bad_index is not None:
            bad, got = self._bad_index
            raise ValueError(f"{path}: line {bad + 1} has index {got!r}, expected {bad}")
        if n_records is not None and n != n_records:
            raise ValueError(f"{path}: {n} scores for {n_records} records: the scores are for another file")
        self.status_values = list(self._statuses)

    def __len__(self) -> int:
        return len(self.status)

    # --- readers --------------------------------------------------------------------------
    # Each keeps per row only a status code (int16) and its score values (float64): what a
    # block of rows held is dropped as soon as it is coded.

    def _read_arrow(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pj

        first = self._first_row()
        if first is None:
            raise _NotArrow
        self.has_field = {f: f in first for f in SCORE_FIELDS}
        fields = [("index", pa.int64()), ("status", pa.string()), ("flags", pa.list_(pa.string()))]
        fields += [(f, pa.float64()) for f in SCORE_FIELDS if self.has_field[f]]
        flag_rows, flag_codes = [], []
        status = _Buffer(np.int16, self._capacity)
        values = {f: _Buffer(np.float64, self._capacity) for f in SCORE_FIELDS if self.has_field[f]}
        offset = 0
        try:
            reader = pj.open_json(self.path, read_options=pj.ReadOptions(block_size=ARROW_BLOCK, use_threads=True),
                                  parse_options=pj.ParseOptions(explicit_schema=pa.schema(fields),
                                                                unexpected_field_behavior="ignore"))
            for batch in reader:
                m = batch.num_rows
                index = batch.column("index")
                if index.null_count:
                    raise _NotArrow  # a row without an index: the Python reader words it
                if self._bad_index is None:
                    got = index.to_numpy(zero_copy_only=False)
                    wrong = np.flatnonzero(got != np.arange(offset, offset + m))
                    if len(wrong):
                        self._bad_index = (offset + int(wrong[0]), int(got[wrong[0]]))
                # statuses in order of first appearance, as Counter and the Python reader see them
                enc = pc.dictionary_encode(batch.column("status"))
                codes = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)
                names = enc.dictionary.to_pylist() + [None]
                uniq, at = np.unique(codes, return_index=True)
                for c in uniq[np.argsort(at)].tolist():
                    self._statuses.setdefault(names[c], len(self._statuses))
                status.extend(np.array([self._statuses.get(v, -1) for v in names], dtype=np.int16)[codes])
                for f in values:
                    values[f].extend(batch.column(f).to_numpy(zero_copy_only=False))
                flags = batch.column("flags")
                flat = pc.list_flatten(flags)
                if len(flat):
                    if flat.null_count:
                        raise _NotArrow  # a null inside a list: the Python reader says what it does
                    fenc = pc.dictionary_encode(flat)
                    lookup = np.array([self._flag_names.setdefault(v, len(self._flag_names))
                                       for v in fenc.dictionary.to_pylist()], dtype=np.int64)
                    flag_rows.append(pc.list_parent_indices(flags).to_numpy() + offset)
                    flag_codes.append(lookup[fenc.indices.to_numpy(zero_copy_only=False).astype(np.int64)])
                offset += m
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise _NotArrow from None
        self.status = status.array()
        self.values = {f: v.array() for f, v in values.items()}
        if "score" not in self.values:  # no row has one: every record unscored
            self.values["score"] = np.full(offset, np.nan)
        self._set_flags(np.concatenate(flag_rows) if flag_rows else np.zeros(0, np.int64),
                        np.concatenate(flag_codes) if flag_codes else np.zeros(0, np.int64))

    def _set_flags(self, rows: np.ndarray, codes: np.ndarray) -> None:
        """Row ``rows[j]`` carries the flag coded ``codes[j]`` in ``self._flag_names``: counted
        once a row (set(flags)), kinds (duplicate_of_N: "duplicate") in ``kind_values``."""
        names = list(self._flag_names)
        width = max(1, len(names))
        pairs = np.unique(rows.astype(np.int64) * width + codes) if len(codes) else np.zeros(0, np.int64)
        kinds = sorted({_kind(v) for v in names})
        kind_of = np.array([kinds.index(_kind(v)) for v in names], dtype=np.int64)
        self.flag_rows = pairs // width
        self.flag_kinds = kind_of[pairs % width] if len(pairs) else np.zeros(0, np.int64)
        self.kind_values = kinds

    def _read_python(self) -> None:
        """One row at a time with json.loads: any file read_jsonl reads (and its errors)."""
        from array import array

        self._statuses, self._flag_names, self._bad_index = {}, {}, None
        status = array("h")
        values = {f: array("d") for f in SCORE_FIELDS}
        flag_rows, flag_codes = array("q"), array("q")
        self.has_field = {f: False for f in SCORE_FIELDS}
        nan = math.nan
        with open(self.path, encoding="utf-8") as fh:
            n = 0
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path}: line {lineno} is not valid JSON: {exc.msg}") from None
                if n == 0:
                    self.has_field = {f: f in row for f in SCORE_FIELDS}
                got = row.get("index")
                if got != n and self._bad_index is None:
                    self._bad_index = (n, got)
                status.append(self._statuses.setdefault(row.get("status"), len(self._statuses)))
                for f in SCORE_FIELDS:
                    v = row.get(f)
                    values[f].append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else nan)
                for flag in set(row.get("flags") or ()):
                    flag_rows.append(n)
                    flag_codes.append(self._flag_names.setdefault(flag, len(self._flag_names)))
                n += 1
        self.status = np.frombuffer(status, dtype=np.int16).copy() if n else np.zeros(0, np.int16)
        self.values = {f: np.frombuffer(v, dtype=np.float64).copy() if n else np.zeros(0) for f, v in values.items()
                       if f == "score" or self.has_field[f]}
        self._set_flags(np.frombuffer(flag_rows, dtype=np.int64).copy() if len(flag_rows) else np.zeros(0, np.int64),
                        np.frombuffer(flag_codes, dtype=np.int64).copy() if len(flag_codes) else np.zeros(0, np.int64))

    def _first_row(self):
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        return json.loads(line)
                    except json.JSONDecodeError:
                        return None
        return None

    def ranking(self, field: str, exclude_kinds=()) -> np.ndarray:
        """:func:`select.selectable_scores` as float64, NaN for None."""
        if field != "score" and len(self) and not self.has_field.get(field):
            raise ValueError(f"{self.path}: no field {field!r} (selection.score: {field} needs a rating by a judge "
                             f"with score_mode: logprobs)")
        scored = self.status == self._code("scored")
        values = self.values.get(field)
        out = np.where(scored, values if values is not None else np.nan, np.nan)
        for kind in exclude_kinds:
            if kind in self.kind_values:
                out[self.flag_rows[self.flag_kinds == self.kind_values.index(kind)]] = np.nan
        return out

    def _code(self, status) -> int:
        return self._statuses.get(status, -1)

    def status_counts(self) -> dict:
        counts = np.bincount(self.status, minlength=len(self.status_values))
        return {v: int(c) for v, c in zip(self.status_values, counts) if c}

    def flag_counts(self, kept: np.ndarray | None = None) -> dict:
        rows, kinds = self.flag_rows, self.flag_kinds
        if kept is not None:
            mask = np.isin(rows, kept)
            kinds = kinds[mask]
        counts = np.bincount(kinds, minlength=len(self.kind_values))
        return {k: int(c) for k, c in zip(self.kind_values, counts) if c}

    def original_value(self, field: str, i: int):
        """Row ``i``'s ``field`` as the file writes it (4 stays an int, 4.0 a float)."""
        with open(self.path, encoding="utf-8") as fh:
            n = 0
            for line in fh:
                if line.strip():
                    if n == i:
                        return json.loads(line).get(field)
                    n += 1
        raise IndexError(i)


class _NotArrow(Exception):
    pass


def float_column(values) -> np.ndarray:
    """Per-record values as float64, NaN for None: a list (as tests and the list code give them)
    or an array, which is used as it is."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def select_kept(scores: np.ndarray, hashes, method: str = "threshold", threshold: float | None = 4.5,
                k: int | None = None, fraction: float | None = None) -> np.ndarray:
    """:func:`select.select_indices` over arrays: ``scores`` float64 (NaN: unscored), ``hashes``
    the records' content sha256s (the tie-break): a RecordsIndex, or an S32 array. The same
    indices, in order."""
    n = len(scores)
    if len(hashes) != n:
        raise ValueError(f"{len(hashes)} records but {n} scores: the scores are for another file")
    present = ~np.isnan(scores)
    if method == "threshold":
        if threshold is None:
            raise ValueError("selection method 'threshold' needs selection.threshold")
        return np.flatnonzero(present & (scores >= threshold))
    if method == "top_fraction":
        if fraction is None:
            raise ValueError("selection method 'top_fraction' needs selection.fraction")
        k = round(fraction * n)
        method = "top_k"
    if method == "top_k":
        if k is None:
            raise ValueError("selection method 'top_k' needs selection.k")
        idx = np.flatnonzero(present)
        take = len(range(len(idx))[:k])  # what ranked[:k] keeps, for any k
        if take == 0:
            return np.zeros(0, np.int64)
        if take == len(idx):
            return idx
        vals = scores[idx]
        cut = -np.partition(-vals, take - 1)[take - 1]  # the take-th largest score
        above = idx[vals > cut]
        tied = idx[vals == cut]
        need = take - len(above)
        # among equal scores: by content hash, then by position (sorted() is stable)
        return np.sort(np.concatenate([above, _hash_order(hashes, tied)[:need]]))
    raise ValueError(f"unknown selection method {method!r} (threshold, top_k, top_fraction)")


def _hash_order(hashes, idx: np.ndarray) -> np.ndarray:
    """``idx`` by content hash, then position: ``hashes`` a RecordsIndex or an S32 array."""
    from alpagasus.data.stream import hash_order, prefix8

    if isinstance(hashes, np.ndarray):
        return hash_order(prefix8(hashes), hashes, idx)
    return hashes.hash_order(idx)


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``sorted(random.Random(seed).sample(range(n), size))`` (select.random_indices), with the
    pool of random.sample's list branch as a numpy array instead of a list of n ints."""
    if size > n:
        raise ValueError(f"cannot draw {size} of {n} records")
    rng = random.Random(seed)
    if size < 0:
        raise ValueError("Sample larger than population or is negative")
    setsize = 21
    if size > 5:
        setsize += 4 ** math.ceil(math.log(size * 3, 4))
    if n > setsize:  # random.sample's set branch holds only the `size` drawn: call it
        return np.sort(np.array(rng.sample(range(n), size), dtype=np.int64))
    pool = np.arange(n, dtype=np.int64)
    result = np.empty(size, dtype=np.int64)
    randbelow = rng._randbelow
    for i in range(size):
        j = randbelow(n - i)
        result[i] = pool[j]
        pool[j] = pool[n - i - 1]
    return np.sort(result)


def tie_summary(scores: np.ndarray, kept: np.ndarray) -> tuple[dict, int | None]:
    """:func:`select.cut_ties` over arrays, and the first kept row holding the cut value (whose
    value as written the caller reads back: 4 and 4.0 are one number here)."""
    present = scores[~np.isnan(scores)]
    uniq, counts = np.unique(present, return_counts=True)
    if len(kept):
        kv = scores[kept]
        cut = float(np.min(kv))
        first = int(kept[np.flatnonzero(kv == cut)[0]])
        at_cut = int(counts[np.searchsorted(uniq, cut)])
        kept_at = int(np.sum(kv == cut))
    else:
        cut, first, at_cut, kept_at = None, None, 0, 0
    return {"distinct_values": int(len(uniq)), "cut_value": cut, "ties_at_cut": at_cut,
            "ties_at_cut_kept": kept_at, "largest_tie_group": int(counts.max()) if len(counts) else 0}, first


def value_counts(scores: np.ndarray) -> Counter:
    """Counter of f"{score:g}" over the present scores (select.summarize's score_counts)."""
    present = scores[~np.isnan(scores)]
    uniq, counts = np.unique(present, return_counts=True)
    out: Counter = Counter()
    for v, c in zip(uniq.tolist(), counts.tolist()):
        out[f"{v:g}"] += c
    return out
