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
its line). Parquet, saved datasets and the Hub go through ``datasets``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from alpagasus.core.config import filled
from alpagasus.data import DataError, parse_json, parse_jsonl, read_text

log = logging.getLogger(__name__)
LOCAL_FORMATS = (".json", ".jsonl", ".parquet", ".csv")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass
class SourceRows:
    origin: str                      # names the file or dataset in every error and in the summary
    columns: list[str]               # in source order (JSON: the union of keys, first seen first)
    rows: list                       # one per source row; source_row = the position here
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
    return _via_datasets(path, "parquet")


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


class StreamedRows:
    """A JSON or JSONL file's rows, parsed again on every pass instead of held (at 10M rows the
    dicts would take ~10 GB): what ``SourceRows.rows`` is for those files. ``len`` and the
    columns come from a first pass, which also checks that the file parses."""

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

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


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
    """Every row a dict of the header's columns to its cells, as strings."""
    text = read_text(path).removeprefix("\ufeff")  # the byte-order mark spreadsheets write
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[dict] = []
    start = 1
    # The csv module refuses a cell over 128 KiB by default; a record's output may be longer.
    limit = csv.field_size_limit(max(len(text), csv.field_size_limit()))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: the file is empty")
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:
            raise DataError(f"{path}: the header names column(s) {', '.join(map(repr, dup))} more than once")
        start = reader.line_num + 1
        for cells in reader:
            if cells:  # a blank line is no row
                if (n := len(cells)) != len(header):
                    raise DataError(
                        f"{path}: row {len(rows)} (line {start}): {n} cell{'s' * (n != 1)} where the header has "
                        f"{len(header)} ({', '.join(header)}); an empty cell is written as nothing between "
                        f"two commas, and a comma inside a cell needs the cell in double quotes")
                rows.append(dict(zip(header, cells)))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: row {len(rows)} (line {start}): not valid CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)
    return SourceRows(str(path), list(header), rows)


def _rows_of(dataset, origin: str, details: dict | None = None) -> SourceRows:
    return SourceRows(origin, list(dataset.column_names), dataset.to_list(), details or {})


def _via_datasets(path: Path, builder: str, **options) -> SourceRows:
    import datasets

    datasets.disable_progress_bars()
    # The Arrow copy is only a step on the way to our JSON: a throwaway cache, not ~/.cache.
    with tempfile.TemporaryDirectory(prefix="alpagasus-datasets-") as tmp:
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=tmp, **options)
        except Exception as exc:  # datasets wraps Arrow and pandas errors in several types
            raise DataError(f"{path}: cannot be read as {builder} ({_one_line(exc)})") from None
        return _rows_of(ds, str(path))


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
    with tempfile.TemporaryDirectory(prefix="alpagasus-datasets-") as tmp:
        try:
            ds = datasets.load_dataset(str(folder), name, split=split, cache_dir=tmp)
        except Exception as exc:
            raise DataError(f"{origin}: cannot be loaded ({_one_line(exc)})") from None
        # The snapshot folder is named by the commit the revision resolved to: what was read.
        return _rows_of(ds, origin, {"hub": {"path": path, "name": name, "revision": revision, "split": split,
                                             "commit": folder.name}})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
