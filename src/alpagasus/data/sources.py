"""Where an instruction set's rows come from: a local file (JSON, JSONL, Parquet, CSV, or a
dataset saved with ``save_to_disk``) or a dataset on the Hugging Face Hub at a pinned revision.

Every reader returns the same thing, a ``SourceRows``: the rows as plain dicts, in source order,
and the column names, so that one mapping step (``alpagasus.data.mapping``) turns any of them into
instruction/input/output records.

JSON and JSONL are read with Python's json module rather than through ``datasets``: Arrow
unifies a column's type across rows, so a ``3`` among strings would be cast or rejected
without a row number, and a missing key would become a null; read as JSON, each value keeps
the type it was written with and a bad one is reported at its row. CSV is read with Python's
csv module, for the same reason: every cell is the string it is (no type guessing, no "empty
means null": Dolly's empty context stays ""), and a row with more or fewer cells than the
header is an error naming it (pandas would fill a short row in, and name a long one only by
its line). Parquet is read with pyarrow, saved datasets and the Hub through ``datasets``.

No reader holds the rows: each is a ``LazyRows``, read again on every pass (a first pass checks
the whole file and counts it), so that a source of 10M rows costs one batch in Python objects.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from alpagasus.core.config import filled
from alpagasus.data import DataError, parse_json, parse_jsonl, read_text

log = logging.getLogger(__name__)
LOCAL_FORMATS = (".json", ".jsonl", ".parquet", ".csv")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass
class SourceRows:
    origin: str                      # names the file or dataset in every error and in the summary
    columns: list[str]               # in source order (JSON: the union of keys, first seen first)
    rows: list                       # one per source row (a list or LazyRows); source_row = the position here
    details: dict = field(default_factory=dict)  # e.g. the Hub commit a revision resolved to


# --- local files ------------------------------------------------------------------------------


def read_local(path: str | os.PathLike) -> SourceRows:
    """Rows of a local file, chosen by extension, or of a ``save_to_disk`` directory."""
    path = Path(path)
    if path.is_dir():
        return _read_saved_dataset(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise DataError(f"{path}: unknown format {suffix or '(no extension)'!r}; data.source local reads "
                        f"{', '.join(LOCAL_FORMATS)} files or a directory written by save_to_disk")
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return _read_parquet(path)


def _columns_of(rows: list) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            seen.update(dict.fromkeys(row))
    return list(seen)


def _read_json(path: Path) -> SourceRows:
    return _streamed(path, jsonl=False) or _read_json_whole(path)


def _read_json_whole(path: Path) -> SourceRows:
    rows = parse_json(read_text(path), path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
    return SourceRows(str(path), _columns_of(rows), rows)


def _read_jsonl(path: Path) -> SourceRows:
    return _streamed(path, jsonl=True) or _read_jsonl_whole(path)


def _read_jsonl_whole(path: Path) -> SourceRows:
    rows, _ = parse_jsonl(read_text(path), path, unit="row")
    return SourceRows(str(path), _columns_of(rows), rows)


class LazyRows:
    """A source's rows read again on every pass instead of held (at 10M rows the dicts would take
    ~10 GB): what ``SourceRows.rows`` is for every reader but the whole-file JSON fallbacks.
    ``len`` and the columns come from a first pass, which also checks the file."""

    columns: list[str]
    _len: int

    def __iter__(self) -> Iterator:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


class StreamedRows(LazyRows):
    """A JSON or JSONL file's rows, parsed a block at a time (alpagasus.data.stream)."""

    def __init__(self, path: Path, jsonl: bool):
        self.path, self.jsonl = path, jsonl
        seen: dict[str, None] = {}
        n = 0
        for row in self:
            if isinstance(row, dict):
                seen.update(dict.fromkeys(row))
            n += 1
        self.columns, self._len = list(seen), n

    def __iter__(self):
        from alpagasus.data.stream import iter_json_values

        for value, _ in iter_json_values(self.path, self.jsonl):
            yield value


def _streamed(path: Path, jsonl: bool) -> SourceRows | None:
    """The file's rows streamed, or None where the whole-file reader is to read it (any problem
    at all, which that reader then words: the file cannot be parsed, is empty, is not a list,
    holds no rows, or holds line ends other than \n and \r that JSONL splitting knows)."""
    from alpagasus.data.stream import NotStreamable

    try:
        rows = StreamedRows(path, jsonl)
    except NotStreamable:
        return None
    if len(rows) == 0:
        return None
    return SourceRows(str(path), rows.columns, rows)


def _read_csv(path: Path) -> SourceRows:
    rows = CsvRows(path)
    return SourceRows(str(path), rows.columns, rows)


class CsvRows(LazyRows):
    """Every row a dict of the header's columns to its cells, as strings, read a line at a time
    (newline="": a line ends at \n, \r\n or \r, and a quoted cell may hold any of them)."""

    def __init__(self, path: Path):
        self.path = path
        _require_text(path)
        self.columns: list[str] = []
        n = 0
        for _ in self:
            n += 1
        self._len = n

    def __iter__(self):
        path = self.path
        n, start = 0, 1
        # The csv module refuses a cell over 128 KiB by default; a record's output may be longer.
        limit = csv.field_size_limit(max(path.stat().st_size, csv.field_size_limit()))
        try:
            # utf-8-sig: the byte-order mark spreadsheets write is no part of the first column's name
            with open(path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if not header:
                    raise DataError(f"{path}: the file is empty")
                dup = sorted({c for c in header if header.count(c) > 1})
                if dup:
                    raise DataError(f"{path}: the header names column(s) {', '.join(map(repr, dup))} more than once")
                self.columns = list(header)
                start = reader.line_num + 1
                for cells in reader:
                    if cells:  # a blank line is no row
                        if (k := len(cells)) != len(header):
                            raise DataError(
                                f"{path}: row {n} (line {start}): {k} cell{'s' * (k != 1)} where the header has "
                                f"{len(header)} ({', '.join(header)}); an empty cell is written as nothing between "
                                f"two commas, and a comma inside a cell needs the cell in double quotes")
                        yield dict(zip(header, cells))
                        n += 1
                    start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}: row {n} (line {start}): not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        finally:
            csv.field_size_limit(limit)


BLOCK = 1 << 24  # bytes a read when a file is checked without being held


def _require_text(path: Path) -> None:
    """read_text's emptiness check without holding the file (not UTF-8 is found as it is read)."""
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            if block.strip():
                return
    raise DataError(f"{path}: the file is empty")


def _not_utf8(path: Path) -> DataError:
    """read_text's error for a file that is not UTF-8, its byte offset counted a block at a time."""
    import codecs

    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(BLOCK)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # the decoder's buffer holds at most 3 bytes of an unfinished character before the block
                held = len(exc.object) - len(block)
                return DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {offset - held + exc.start})")
            if not block:
                return DataError(f"{path}: not UTF-8 text")
            offset += len(block)


def _read_parquet(path: Path) -> SourceRows:
    rows = ParquetRows(path)
    return SourceRows(str(path), rows.columns, rows)


class ParquetRows(LazyRows):
    """A Parquet file's rows, a record batch at a time (pyarrow): the count and the columns from
    its footer, each value as Arrow's ``to_pylist`` gives it (a null is None, the mapping then
    names it)."""

    def __init__(self, path: Path):
        self.path = path
        meta = self._open()
        self.columns, self._len = list(meta.schema_arrow.names), meta.metadata.num_rows
        for _ in self._batches():  # every page decodes: a corrupt one is an error now, not mid-run
            pass

    def _open(self):
        import pyarrow.parquet as pq

        try:
            # pre_buffer off: with it on, pyarrow's reads ahead kept ~110 MB a million rows
            # (measured: 324 MB of its pool at 3M rows, 30 MB without)
            return pq.ParquetFile(self.path, pre_buffer=False)
        except Exception as exc:  # pyarrow's ArrowInvalid, OSError, ...
            raise DataError(f"{self.path}: cannot be read as parquet ({_one_line(exc)})") from None

    def _batches(self):
        try:
            yield from self._open().iter_batches(batch_size=10_000)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.path}: cannot be read as parquet ({_one_line(exc)})") from None

    def __iter__(self):
        for batch in self._batches():
            yield from batch.to_pylist()


class ArrowRows(LazyRows):
    """A ``datasets.Dataset``'s rows, a batch at a time, each value as ``Dataset.to_list`` gives
    it. ``keep``: what must live as long as the rows (the temporary cache its Arrow files are
    mapped from)."""

    def __init__(self, dataset, keep=None):
        self.dataset, self._keep = dataset, keep
        self.columns, self._len = list(dataset.column_names), dataset.num_rows

    def __iter__(self):
        for batch in self.dataset.iter(batch_size=10_000):
            names = list(batch)
            for values in zip(*(batch[c] for c in names)):
                yield dict(zip(names, values))


def _rows_of(dataset, origin: str, details: dict | None = None, keep=None) -> SourceRows:
    return SourceRows(origin, list(dataset.column_names), ArrowRows(dataset, keep), details or {})


def _read_saved_dataset(path: Path) -> SourceRows:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: a directory, but not one written by save_to_disk "
                        f"(data.source local reads {', '.join(LOCAL_FORMATS)} files or such a directory)") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataError(f"{path}: a saved DatasetDict with splits {', '.join(ds)}; save the one split "
                            f"to use (ds['train'].save_to_disk(...))")
        ds = next(iter(ds.values()))
    return _rows_of(ds, str(path))


# --- the Hugging Face Hub ---------------------------------------------------------------------


def hub_origin(hub: dict) -> str:
    name = f", config {hub['name']}" if hub.get("name") else ""
    return f"hub {hub.get('path')} (revision {hub.get('revision')}{name}, split {filled('data.hub', hub)['split']})"


def fetch_hub_snapshot(path: str, revision: str, cache_dir: str | os.PathLike) -> Path:
    """The dataset repository at ``revision``, downloaded into ``cache_dir`` once.

    A snapshot already in the cache is used without asking the Hub (a commit sha cannot
    change; a tag resolves as it did the first time), so a rerun works offline.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    kwargs = dict(repo_id=path, repo_type="dataset", revision=revision, cache_dir=str(cache_dir))
    try:
        return Path(snapshot_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached, or an interrupted download (IncompleteSnapshotError)
        pass
    return Path(snapshot_download(**kwargs))


def read_hub(hub: dict, cache_dir: str | os.PathLike,
             fetch: Callable[[str, str, str | os.PathLike], Path] = fetch_hub_snapshot) -> SourceRows:
    """Rows of ``hub['split']`` of ``hub['path']`` at ``hub['revision']`` (config ``hub['name']``).

    ``fetch`` returns the repository's local folder; tests inject one that never reaches the
    network, and everything after it is the same code a real download runs.
    """
    import datasets
    from huggingface_hub import errors as hub_errors

    origin = hub_origin(hub)
    path, revision, name, split = hub["path"], hub.get("revision"), hub.get("name"), filled("data.hub", hub)["split"]
    if not revision:
        raise DataError(f"config data.hub.revision: required (a commit sha or a tag), so that the run can be "
                        f"repeated on the same data; see the dataset's history on huggingface.co/datasets/{path}")
    if not COMMIT_SHA.fullmatch(revision):
        log.warning("%s: revision %r is not a commit sha; if it is a branch it moves (the commit it "
                    "resolved to is recorded in the data summary)", origin, revision)
    try:
        folder = Path(fetch(path, revision, cache_dir))
    except hub_errors.RevisionNotFoundError:
        raise DataError(f"{origin}: revision {revision!r} does not exist") from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.GatedRepoError) as exc:
        raise DataError(f"{origin}: no such dataset, or it is gated or private and needs a token in the "
                        f"HF_TOKEN environment variable ({_one_line(exc)})") from None
    except hub_errors.LocalEntryNotFoundError as exc:
        raise DataError(f"{origin}: revision {revision!r} is not in the cache {cache_dir} and the Hub could not "
                        f"be reached ({_one_line(exc)})") from None
    except OSError as exc:  # network and HTTP errors of the download itself
        raise DataError(f"{origin}: download failed ({_one_line(exc)})") from None

    datasets.disable_progress_bars()
    try:
        configs = datasets.get_dataset_config_names(str(folder))
    except Exception as exc:
        raise DataError(f"{origin}: the repository cannot be read as a dataset ({_one_line(exc)})") from None
    if name and name not in configs:
        raise DataError(f"{origin}: config {name!r} does not exist (configs: {', '.join(configs)})")
    try:
        splits = datasets.get_dataset_split_names(str(folder), name)
    except Exception as exc:
        raise DataError(f"{origin}: the splits cannot be read ({_one_line(exc)})") from None
    if split not in splits:
        raise DataError(f"{origin}: split {split!r} does not exist (splits: {', '.join(splits)})")
    # The Arrow copy is only a step on the way to our JSON: a throwaway cache, not ~/.cache, which
    # lives as long as the rows read from it.
    tmp = tempfile.TemporaryDirectory(prefix="alpagasus-datasets-")
    try:
        ds = datasets.load_dataset(str(folder), name, split=split, cache_dir=tmp.name)
    except Exception as exc:
        tmp.cleanup()
        raise DataError(f"{origin}: cannot be loaded ({_one_line(exc)})") from None
    # The snapshot folder is named by the commit the revision resolved to: what was read.
    return _rows_of(ds, origin, {"hub": {"path": path, "name": name, "revision": revision, "split": split,
                                         "commit": folder.name}}, keep=tmp)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
