"""Records at scale: read and write a records file one record at a time, and the index beside it.

``load_records`` holds a whole set as Python dicts (~1 KB each: 10 GB at 10M records). The data
rule, rating and selection read and write through this module instead, so what they hold is a
bounded window of records plus numpy arrays of a few bytes per record:

- ``iter_records(path)`` yields the validated records of a JSON list or a JSONL file, parsed
  a block at a time. A file with anything wrong in it raises exactly the error ``load_records``
  raises (the same one line naming file, record and field): a bad record at once, and a file
  it does not parse itself (a syntax error, not a list, no records) goes to ``load_records``,
  which holds it whole only to say what is wrong.
- ``RecordsWriter`` writes a JSON list byte for byte as ``write_records`` does (Alpaca's
  indent 4), one record at a time, atomically, and beside it an **index**: ``<name>.index``
  (columns of one entry a record: where its text starts and ends in the file, the sha256 of
  its instruction, input and output, and the length of its output) and ``<name>.index.json``
  (the record count, where each column starts, and the size and modification time of the
  file it describes). The index is internal: no rule names it, and a reader uses it only
  while the file is the one it was written with (size and mtime equal); otherwise it reads
  the file itself. With it, selection and the random baseline
  never parse a record: they rank numpy arrays and copy the kept records' bytes.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from alpagasus.data import content_hash, load_records, validate_record

BLOCK_CHARS = 1 << 20  # what iter_records reads at a time (it grows for a longer record)
INDEX_VERSION = 2
# The index file: each column in turn (the offsets in its .index.json), n entries each.
# hash8: the hash's first 8 bytes as an integer, what sorting and grouping by hash read (8 bytes
# a record, not 32; the whole hash only where two are equal).
INDEX_COLUMNS = {"start": np.dtype("<i8"), "end": np.dtype("<i8"), "hash": np.dtype("S32"),
                 "hash8": np.dtype(">u8"), "output_chars": np.dtype("<i8")}
CHUNK = 1 << 16  # records a column is read or written at a time
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
    block ends without an exception. The index's columns go to temporary files as they grow
    (a block of 64k records at a time), so what is held is one block."""

    def __init__(self, path: str | os.PathLike, index: bool = True):
        self.path = Path(path)
        self.index = index
        self.count = 0

    def __enter__(self) -> "RecordsWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh = open(self._tmp, "wb")
        self._pos = 0  # bytes written
        self._block: dict[str, list] = {name: [] for name in INDEX_COLUMNS}
        self._columns = {name: self.path.with_name(f".{self.path.name}.{name}.{os.getpid()}.tmp")
                         for name in INDEX_COLUMNS} if self.index else {}
        self._column_fh = {name: open(p, "wb") for name, p in self._columns.items()}
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
            block = self._block
            block["start"].append(start)
            block["end"].append(self._pos)
            digest = bytes.fromhex(content_hash(rec))
            block["hash"].append(digest)
            block["hash8"].append(int.from_bytes(digest[:8], "big"))
            block["output_chars"].append(len(out) if isinstance(out, str) else -1)
            if len(block["start"]) >= CHUNK:
                self._flush_block()
        self.count += 1

    def write_raw(self, text: bytes) -> None:
        """A record's text as another such file holds it (copied, not parsed); no index."""
        self._write(b"[\n    " if self.count == 0 else b",\n    ")
        self._write(text)
        self.count += 1

    def _flush_block(self) -> None:
        for name, values in self._block.items():
            if values:
                self._column_fh[name].write(np.array(values, dtype=INDEX_COLUMNS[name]).tobytes())
                values.clear()

    def _column(self, name: str) -> "Column":
        self._flush_block()
        self._column_fh[name].flush()
        return Column(self._columns[name], 0, INDEX_COLUMNS[name], self.count)

    def duplicate_groups(self, exact: bool = False) -> list[list[int]]:
        """:func:`alpagasus.data.duplicate_groups` of the records written so far, from their
        content hashes. ``exact``: also compare the records of a group by content (a field
        holding \\x1f, the hash's separator, could make two different records hash alike)."""
        from alpagasus.data import record_key

        groups = equal_hash_groups(self._column("hash8").read(), self._column("hash"))
        if exact and groups:
            self._fh.flush()
            starts, ends = self._column("start"), self._column("end")
            split = []
            with open(self._tmp, "rb") as fh:
                for g in groups:
                    by_key: dict = {}
                    for i in g:
                        fh.seek(int(starts[i]))
                        rec = json.loads(fh.read(int(ends[i] - starts[i])))
                        by_key.setdefault(record_key(rec), []).append(i)
                    split.extend(v for v in by_key.values() if len(v) > 1)
            groups = split
        groups.sort(key=lambda g: g[0])
        return groups

    def __exit__(self, exc_type, exc, tb) -> None:
        fh, tmp = self._fh, self._tmp
        files = [tmp, *self._columns.values()]
        try:
            if exc_type is None:
                fh.write(b"[]\n" if self.count == 0 else b"\n]\n")
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
            if exc_type is None and self.index:
                self._flush_block()
            for cfh in self._column_fh.values():
                cfh.close()
            if exc_type is not None:
                return
            if self.index:
                index_path, meta_path = index_paths(self.path)
                index_tmp = self.path.with_name(f".{self.path.name}.index.{os.getpid()}.tmp")
                meta_tmp = self.path.with_name(f".{self.path.name}.meta.{os.getpid()}.tmp")
                files += [index_tmp, meta_tmp]
                sections, at = {}, 0
                with open(index_tmp, "wb") as out:
                    for name, part in self._columns.items():
                        with open(part, "rb") as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                        sections[name] = at
                        at += self.count * INDEX_COLUMNS[name].itemsize
                    out.flush()
                    os.fsync(out.fileno())
                st = tmp.stat()  # a rename keeps size and mtime: the fingerprint of the file
                meta = {"version": INDEX_VERSION, "records": self.count, "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns, "sections": sections}
                with open(meta_tmp, "w", encoding="utf-8") as out:
                    json.dump(meta, out)
                # The file first: an index renamed before it would describe the old one (and
                # its fingerprint, the new file's, would not match the old file: it is ignored).
                os.replace(tmp, self.path)
                os.replace(index_tmp, index_path)
                os.replace(meta_tmp, meta_path)
            else:
                os.replace(tmp, self.path)
                for stale in index_paths(self.path):
                    stale.unlink(missing_ok=True)
        finally:
            for f in files:
                Path(f).unlink(missing_ok=True)


def equal_hash_groups(hash8: np.ndarray, hashes) -> list[list[int]]:
    """Groups (size >= 2, each ascending) of the positions whose 32-byte hashes are equal:
    sorted by their first 8 bytes (``hash8``), and only where those are equal by the whole
    hash (``hashes[i:i + 1]``, read one at a time)."""
    if len(hash8) < 2:
        return []
    order = np.argsort(hash8, kind="stable")
    groups = []
    for members in _equal_runs(hash8[order], order):
        by_hash: dict = {}
        for i in np.sort(members).tolist():
            by_hash.setdefault(_whole(hashes, i), []).append(i)
        groups.extend(g for g in by_hash.values() if len(g) > 1)
    return groups


def _whole(hashes, i: int) -> bytes:
    # a slice, not hashes[i]: numpy drops a bytes scalar's trailing zero bytes
    return np.asarray(hashes[i:i + 1]).tobytes()


def _equal_runs(sorted_keys: np.ndarray, order: np.ndarray):
    """The runs of equal values in ``sorted_keys``: each as the slice of ``order`` it covers."""
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if not len(same):
        return
    gaps = np.diff(same) > 1
    for a, b in zip(same[np.r_[True, gaps]].tolist(), (same[np.r_[gaps, True]] + 2).tolist()):
        yield order[a:b]


def hash_order(hash8: np.ndarray, hashes, idx: np.ndarray) -> np.ndarray:
    """``idx`` (ascending) sorted by the content hash of each, equal hashes by position (as
    ``sorted`` keeps equal keys in order): by the 8-byte prefixes, the whole hash only where
    two prefixes are equal."""
    if len(idx) < 2:
        return idx
    prefix = hash8[idx]
    order = np.argsort(prefix, kind="stable")
    out = idx[order]
    for run in _equal_runs(prefix[order], np.arange(len(out))):
        a, b = int(run[0]), int(run[-1]) + 1
        members = out[a:b]  # ascending position within the run (a stable sort)
        keys = [_whole(hashes, i) for i in members.tolist()]
        out[a:b] = members[sorted(range(len(keys)), key=keys.__getitem__)]
    return out


def prefix8(hashes: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each 32-byte hash (an S32 array) as a big-endian integer."""
    if not len(hashes):
        return np.zeros(0, ">u8")
    return np.ascontiguousarray(np.asarray(hashes).view(np.uint8).reshape(-1, 32)[:, :8]).view(">u8").ravel()


class Column:
    """One column of an index file, read with ``read`` (what is asked for, not memory-mapped:
    a mapped page would count in the process's memory as long as the map lives)."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, n: int):
        self.path, self.offset, self.dtype, self.n = Path(path), offset, dtype, n

    def __len__(self) -> int:
        return self.n

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n if stop is None else min(stop, self.n)
        if stop <= start:
            return np.zeros(0, self.dtype)
        return np.fromfile(self.path, dtype=self.dtype, count=stop - start,
                           offset=self.offset + start * self.dtype.itemsize)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step is None:
            start, stop, _ = key.indices(self.n)
            return self.read(start, stop)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if key < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(key)
            return self.read(i, i + 1)[0]
        return self.read()[key]

    def __array__(self, dtype=None, copy=None):
        out = self.read()
        return out if dtype is None else out.astype(dtype)

    def chunks(self, size: int = CHUNK):
        for start in range(0, self.n, size):
            yield start, self.read(start, start + size)


def write_records_stream(path: str | os.PathLike, records: Iterable[dict], index: bool = True) -> int:
    """Write ``records`` as ``write_records`` would, one at a time (and the index); the count."""
    with RecordsWriter(path, index) as w:
        for rec in records:
            w.write(rec)
    return w.count


# --- the index --------------------------------------------------------------------------------


def index_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_name(path.name + ".index"), path.with_name(path.name + ".index.json")


class IndexColumns(dict):
    """The index's columns by name (``start``, ``end``, ``hash``, ``output_chars``), each an
    array with one entry a record; ``len`` is the record count."""

    def __init__(self, columns: dict, n: int):
        super().__init__(columns)
        self.n = n

    def __len__(self) -> int:
        return self.n


def load_index(path: str | os.PathLike) -> IndexColumns | None:
    """The index of the records file ``path`` (its columns read when asked), or None when there
    is none or it describes another version of the file."""
    index_path, meta_path = index_paths(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        st = Path(path).stat()
        if (meta.get("version") != INDEX_VERSION or meta.get("size") != st.st_size
                or meta.get("mtime_ns") != st.st_mtime_ns):
            return None
        n = int(meta["records"])
        if index_path.stat().st_size != n * sum(dt.itemsize for dt in INDEX_COLUMNS.values()):
            return None
        if n == 0:
            return IndexColumns({name: np.zeros(0, dt) for name, dt in INDEX_COLUMNS.items()}, 0)
        return IndexColumns({name: Column(index_path, int(meta["sections"][name]), dt, n)
                             for name, dt in INDEX_COLUMNS.items()}, n)
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RecordsIndex:
    """A records file, validated, as arrays: its index, or one pass over the file to make
    the columns selection reads (in memory) when it has none."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        rows = load_index(self.path)
        self.indexed = rows is not None
        if rows is None:
            hashes, lengths = [], []
            for rec in iter_records(self.path):
                hashes.append(bytes.fromhex(content_hash(rec)))
                lengths.append(len(rec["output"]))
            n = len(hashes)
            hashes = np.array(hashes, dtype="S32")
            rows = IndexColumns({"hash": hashes, "hash8": prefix8(hashes),
                                 "output_chars": np.array(lengths, dtype=np.int64)}, n)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def hash_order(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` sorted by the records' content hashes, equal ones by position."""
        return hash_order(np.asarray(self.rows["hash8"]), self.rows["hash"], idx)

    def hash_hex(self, i: int) -> str:
        """Record ``i``'s content hash in hex; read a chunk at a time (in order: the gather)."""
        cached = getattr(self, "_hash_chunk", None)
        if cached is None or not cached[0] <= i < cached[0] + len(cached[1]):
            base = i - i % CHUNK
            cached = self._hash_chunk = (base, np.asarray(self.rows["hash"][base:base + CHUNK]))
        return cached[1][i - cached[0]:i - cached[0] + 1].tobytes().hex()

    def write_subset(self, out_path: str | os.PathLike, kept) -> None:
        """The records at the sorted indices ``kept``, as ``write_records`` writes them: their
        bytes copied from the file when it is indexed, else each one parsed and written again.
        The subset gets no index of its own (nothing reads one)."""
        kept = np.asarray(kept, dtype=np.int64)
        if self.indexed:
            starts, ends = self.rows["start"], self.rows["end"]
            with RecordsWriter(out_path, index=False) as w, open(self.path, "rb") as src:
                lo = 0
                for base, chunk_starts in starts.chunks():
                    hi = int(np.searchsorted(kept, base + len(chunk_starts)))
                    if hi > lo:
                        chunk_ends = ends.read(base, base + len(chunk_starts))
                        for i in (kept[lo:hi] - base).tolist():
                            src.seek(int(chunk_starts[i]))
                            w.write_raw(src.read(int(chunk_ends[i] - chunk_starts[i])))
                    lo = hi
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


def iter_slice(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> Iterator[dict]:
    """Records ``start`` to ``stop`` of ``path`` (a shard's): read by their byte ranges where the
    file has its index (nothing before ``start`` is parsed), else from one pass of iter_records."""
    path = Path(path)
    rows = load_index(path)
    if rows is None:
        yield from itertools.islice(iter_records(path), start, stop)
        return
    stop = len(rows) if stop is None else min(stop, len(rows))
    with open(path, "rb") as fh:
        for base in range(start, stop, CHUNK):
            top = min(stop, base + CHUNK)
            starts, ends = rows["start"].read(base, top), rows["end"].read(base, top)
            fh.seek(int(starts[0]))
            block = fh.read(int(ends[-1] - starts[0]))
            for j, (a, b) in enumerate(zip((starts - starts[0]).tolist(), (ends - starts[0]).tolist())):
                yield validate_record(json.loads(block[a:b]), base + j, path)


def count_records(path: str | os.PathLike) -> int:
    """How many records ``path`` holds: its index's count, or one pass that validates every
    record (load_records' errors), so that nothing is sent for a file with a bad record in it."""
    rows = load_index(path)
    if rows is not None:
        return len(rows)
    return sum(1 for _ in iter_records(path))
