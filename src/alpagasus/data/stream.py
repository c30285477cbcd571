"""Records at scale: read and write a records file one record at a time, and the index beside it.

``load_records`` holds a whole set as Python dicts (~1 KB each: 10 GB at 10M records). The data
rule, rating and selection read and write through this module instead, so what they hold is a
bounded window of records plus numpy arrays of a few bytes per record:

- ``iter_records(path)`` yields the validated records of a JSON list or a JSONL file, parsed
  a block at a time. A file with anything wrong in it raises exactly the error ``load_records``
  raises (the same one line naming file, record and field): on the first problem it hands the
  file to ``load_records``, which holds it whole only to say what is wrong.
- ``RecordsWriter`` writes a JSON list byte for byte as ``write_records`` does (Alpaca's
  indent 4), one record at a time, atomically, and beside it an **index**: ``<name>.index.npy``
  (per record: where its text starts and ends in the file, the sha256 of its instruction,
  input and output, and the length of its output) and ``<name>.index.json`` (the record count
  and the size and modification time of the file it describes). The index is internal: no rule
  names it, and a reader uses it only while the file is the one it was written with (size and
  mtime equal); otherwise it reads the file itself. With it, selection and the random baseline
  never parse a record: they rank numpy arrays and copy the kept records' bytes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from alpagasus.data import content_hash, load_records, validate_record

BLOCK_CHARS = 1 << 20  # what iter_records reads at a time (it grows for a longer record)
INDEX_VERSION = 1
INDEX_DTYPE = np.dtype([("start", "<i8"), ("end", "<i8"), ("hash", "S32"), ("output_chars", "<i8")])
_WS = " \t\n\r"


# --- reading ----------------------------------------------------------------------------------


def iter_records(path: str | os.PathLike) -> Iterator[dict]:
    """The validated records of ``path`` (as ``load_records`` reads it), one at a time.

    A record that fails the contract raises load_records' error at once. A file that is not
    a plain JSON list or JSONL (a syntax error, JSONL in a .json file, no records) is read by
    load_records, whole, which raises its error (or, for JSONL named .json, reads it)."""
    path = Path(path)
    done = [0]
    try:
        yield from _stream(path, done)
    except _Fallback:
        records = load_records(path)
        yield from records[done[0]:]


class _Fallback(Exception):
    """Something the streaming reader does not handle itself: load_records says what."""


# Line ends str.splitlines knows and a file's lines do not: load_records reads such a file.
_OTHER_LINE_ENDS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _stream(path: Path, done: list) -> Iterator[dict]:
    if not path.is_file():
        raise _Fallback
    jsonl = path.suffix.lower() == ".jsonl"
    for value, line in iter_json_values(path, jsonl):
        validate_record(value, done[0], path, line)
        yield value
        done[0] += 1
    if done[0] == 0:
        raise _Fallback


NotStreamable = _Fallback


def iter_json_values(path: Path, jsonl: bool) -> Iterator[tuple[object, int | None]]:
    """The values of a JSONL file (and each one's line) or of a JSON list (line None), a block
    at a time. Raises NotStreamable on any problem (not UTF-8, a syntax error, nesting too
    deep, not a list, line ends only str.splitlines knows): the whole-file readers word it."""
    try:
        yield from (_jsonl_values(path) if jsonl else _json_list_values(path))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _Fallback from None


def _jsonl_values(path: Path) -> Iterator[tuple[object, int]]:
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            if _OTHER_LINE_ENDS.search(line):
                raise _Fallback
            if line.strip():
                yield json.loads(line), lineno


def _json_list_values(path: Path) -> Iterator[tuple[object, None]]:
    """The values of a JSON list, a block at a time; not a list: _Fallback."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", newline="") as fh:
        buf, pos, eof = "", 0, False

        def fill(need_more: bool = False):
            nonlocal buf, pos, eof
            if eof:
                return False
            block = fh.read(max(BLOCK_CHARS, len(buf) - pos) if need_more else BLOCK_CHARS)
            buf, pos = buf[pos:] + block, 0
            eof = not block
            return bool(block)

        def skip_ws():
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        fill()
        skip_ws()
        if buf[pos:pos + 1] != "[":
            raise _Fallback
        pos += 1
        skip_ws()
        if buf[pos:pos + 1] == "]":
            raise _Fallback  # no records: load_records words it
        while True:
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if fill(need_more=True):
                        continue
                    raise
                if end == len(buf) and fill(need_more=True):
                    continue  # a number cut at the block's end would parse short
                break
            pos = end
            yield value, None
            skip_ws()
            ch = buf[pos:pos + 1]
            pos += 1
            if ch == "]":
                break
            if ch != ",":
                raise _Fallback
            skip_ws()
        skip_ws()
        if pos < len(buf):
            raise _Fallback  # something after the list


# --- writing ----------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def record_text(rec: dict) -> str:
    """One record as ``json.dump(records, indent=4, ensure_ascii=False)`` writes it inside the
    list (its lines after the first indented by 4 more)."""
    if rec and all(isinstance(v, _SCALARS) for v in rec.values()) and all(isinstance(k, str) for k in rec):
        # The common flat record, through the C encoder: the same text (json.dumps of one value
        # with no indent is what the indenting encoder writes for it), ~5x faster.
        return "{\n" + ",\n".join(f"        {_dumps(k)}: {_dumps(v)}" for k, v in rec.items()) + "\n    }"
    return json.dumps(rec, indent=4, ensure_ascii=False).replace("\n", "\n    ")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class RecordsWriter:
    """``write_records``' file, written one record at a time, with its index.

    Use as a context manager: the file and its index appear (renamed into place) only if the
    block ends without an exception."""

    def __init__(self, path: str | os.PathLike, index: bool = True):
        self.path = Path(path)
        self.index = index
        self.count = 0

    def __enter__(self) -> "RecordsWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh = open(self._tmp, "wb")
        self._pos = 0  # bytes written
        self._rows: list[tuple] = []
        self._parts: list[np.ndarray] = []
        return self

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._pos += len(data)

    def write(self, rec: dict) -> None:
        """One record (json-serialisable: a record of this pipeline)."""
        self._write(b"[\n    " if self.count == 0 else b",\n    ")
        start = self._pos
        self._write(record_text(rec).encode("utf-8"))
        if self.index:
            out = rec.get("output")
            self._rows.append((start, self._pos, bytes.fromhex(content_hash(rec)),
                               len(out) if isinstance(out, str) else -1))
            if len(self._rows) >= 65536:
                self._flush_rows()
        self.count += 1

    def write_raw(self, text: bytes) -> None:
        """A record's text as another such file holds it (copied, not parsed); no index."""
        self._write(b"[\n    " if self.count == 0 else b",\n    ")
        self._write(text)
        self.count += 1

    def duplicate_groups(self, exact: bool = False) -> list[list[int]]:
        """:func:`alpagasus.data.duplicate_groups` of the records written so far, from their
        content hashes. ``exact``: also compare the records of a group by content (a field
        holding \\x1f, the hash's separator, could make two different records hash alike)."""
        from alpagasus.data import record_key

        self._flush_rows()
        hashes = np.concatenate([p["hash"] for p in self._parts]) if self._parts else np.zeros(0, "S32")
        if not len(hashes):
            return []
        order = np.argsort(hashes, kind="stable")
        sorted_h = hashes[order]
        starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
        sizes = np.diff(np.r_[starts, len(sorted_h)])
        groups = [order[a:a + n].tolist() for a, n in zip(starts[sizes > 1], sizes[sizes > 1])]
        del order, sorted_h
        if exact and groups:
            self._fh.flush()
            rows = np.concatenate(self._parts)
            split = []
            with open(self._tmp, "rb") as fh:
                for g in groups:
                    by_key: dict = {}
                    for i in g:
                        fh.seek(int(rows["start"][i]))
                        rec = json.loads(fh.read(int(rows["end"][i] - rows["start"][i])))
                        by_key.setdefault(record_key(rec), []).append(i)
                    split.extend(v for v in by_key.values() if len(v) > 1)
            groups = split
        groups.sort(key=lambda g: g[0])
        return groups

    def _flush_rows(self) -> None:
        if self._rows:
            self._parts.append(np.array(self._rows, dtype=INDEX_DTYPE))
            self._rows = []

    def __exit__(self, exc_type, exc, tb) -> None:
        fh, tmp = self._fh, self._tmp
        files = [tmp]
        try:
            if exc_type is None:
                fh.write(b"[]\n" if self.count == 0 else b"\n]\n")
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
            if exc_type is not None:
                return
            if self.index:
                self._flush_rows()
                rows = np.concatenate(self._parts) if self._parts else np.zeros(0, INDEX_DTYPE)
                self._parts = []
                npy_tmp = self.path.with_name(f".{self.path.name}.index.{os.getpid()}.npy")
                meta_tmp = self.path.with_name(f".{self.path.name}.index.{os.getpid()}.json")
                files += [npy_tmp, meta_tmp]
                with open(npy_tmp, "wb") as out:
                    np.save(out, rows)
                st = tmp.stat()  # a rename keeps size and mtime: the fingerprint of the file
                meta = {"version": INDEX_VERSION, "records": int(len(rows)), "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns}
                with open(meta_tmp, "w", encoding="utf-8") as out:
                    json.dump(meta, out)
                # The file first: an index renamed before it would describe the old one (and
                # its fingerprint, the new file's, would not match the old file: it is ignored).
                os.replace(tmp, self.path)
                os.replace(npy_tmp, index_paths(self.path)[0])
                os.replace(meta_tmp, index_paths(self.path)[1])
            else:
                os.replace(tmp, self.path)
                for stale in index_paths(self.path):
                    stale.unlink(missing_ok=True)
        finally:
            for f in files:
                Path(f).unlink(missing_ok=True)


def write_records_stream(path: str | os.PathLike, records: Iterable[dict], index: bool = True) -> int:
    """Write ``records`` as ``write_records`` would, one at a time (and the index); the count."""
    with RecordsWriter(path, index) as w:
        for rec in records:
            w.write(rec)
    return w.count


# --- the index --------------------------------------------------------------------------------


def index_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_name(path.name + ".index.npy"), path.with_name(path.name + ".index.json")


def load_index(path: str | os.PathLike) -> np.ndarray | None:
    """The index of the records file ``path`` (memory-mapped), or None when there is none or it
    describes another version of the file."""
    npy, meta_path = index_paths(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        st = Path(path).stat()
        if (meta.get("version") != INDEX_VERSION or meta.get("size") != st.st_size
                or meta.get("mtime_ns") != st.st_mtime_ns):
            return None
        rows = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if rows.dtype != INDEX_DTYPE or len(rows) != meta.get("records"):
        return None
    return rows


class RecordsIndex:
    """A records file, validated, as arrays: its index, or one pass over the file to make one
    (in memory) when it has none."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        rows = load_index(self.path)
        self.indexed = rows is not None
        if rows is None:
            parts, part = [], []
            for rec in iter_records(self.path):
                part.append((-1, -1, bytes.fromhex(content_hash(rec)), len(rec["output"])))
                if len(part) >= 65536:
                    parts.append(np.array(part, dtype=INDEX_DTYPE))
                    part = []
            parts.append(np.array(part, dtype=INDEX_DTYPE))
            rows = np.concatenate(parts)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def write_subset(self, out_path: str | os.PathLike, kept) -> None:
        """The records at the sorted indices ``kept``, as ``write_records`` writes them: their
        bytes copied from the file when it is indexed, else each one parsed and written again.
        The subset gets no index of its own (nothing reads one)."""
        kept = np.asarray(kept, dtype=np.int64)
        if self.indexed:
            with RecordsWriter(out_path, index=False) as w, open(self.path, "rb") as src:
                for i in kept.tolist():
                    start, end = int(self.rows["start"][i]), int(self.rows["end"][i])
                    src.seek(start)
                    w.write_raw(src.read(end - start))
            return
        want = iter(kept.tolist())
        nxt = next(want, None)

        def chosen():
            nonlocal nxt
            for i, rec in enumerate(iter_records(self.path)):
                if nxt is None:
                    return
                if i == nxt:
                    yield rec
                    nxt = next(want, None)

        write_records_stream(out_path, chosen(), index=False)


def count_json_list(path: str | os.PathLike) -> int:
    """How many values a JSON list file holds (a selection's size), without keeping them."""
    path = Path(path)
    rows = load_index(path)
    if rows is not None:
        return len(rows)
    n = 0
    try:
        for _ in _json_list_values(path):
            n += 1
    except _Fallback:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)  # an empty list, or not a list: as the loaders before this did
        return len(value)
    return n


def count_records(path: str | os.PathLike) -> int:
    """How many records ``path`` holds: its index's count, or one pass that validates every
    record (load_records' errors), so that nothing is sent for a file with a bad record in it."""
    rows = load_index(path)
    if rows is not None:
        return len(rows)
    return sum(1 for _ in iter_records(path))
