"""Obtain the instruction set the config names and write it, validated, as the pipeline's records.

Every source but the miniature is read by ``read_source`` (a pinned download, a local file or a
Hub dataset: ``alpagasus.data.sources``) and mapped onto records by ``alpagasus.data.mapping``.
"""

from __future__ import annotations

import logging
from collections import Counter
import os
import urllib.error
import urllib.request
from pathlib import Path

from alpagasus.core.config import REPO, filled
from alpagasus.core.io import atomic_path, sha256_file
from alpagasus.data import FIELDS, DataError
from alpagasus.data.mapping import SOURCE_ROW, iter_records_of
from alpagasus.data.stream import RecordsWriter
from alpagasus.data.miniature import make_records
from alpagasus.data.sources import read_hub, read_local

log = logging.getLogger(__name__)


def download(url: str, dest: str | os.PathLike, sha256: str | None, timeout: float = 120) -> Path:
    """Fetch ``url`` to ``dest``, verifying the pinned sha256 before the file appears."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            shared = REPO.parent / "shared" / "data" / "alpaca" / Path(url).name
            copy = f" (there is one at {shared})" if shared.is_file() else ""
            raise DataError(
                f"{url}: download failed ({reason}). Without internet, set data.source: local and "
                f"data.local_path to a copy of the file{copy}."
            ) from None
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise DataError(f"{url}: sha256 mismatch: expected {sha256}, got {got}; file not kept")
    return dest


def read_source(data_cfg: dict, download_dir: str | os.PathLike,
                hub_cache_dir: str | os.PathLike | None = None, hub_fetch=None):
    """The rows of the configured source (not the miniature), and the name to report it by.

    ``download`` verifies the pinned sha256; ``local`` reads the user's file (JSON, JSONL,
    Parquet, CSV, or a save_to_disk directory); ``hub`` downloads a dataset at a pinned
    revision into ``hub_cache_dir`` once (``hub_fetch`` replaces the download in tests).
    """
    source = data_cfg["source"]
    if source == "download":
        cached = Path(download_dir) / Path(data_cfg["url"]).name
        if not (cached.is_file() and sha256_file(cached) == data_cfg.get("sha256")):
            download(data_cfg["url"], cached, data_cfg.get("sha256"))
        return read_local(cached), data_cfg["url"]
    if source == "local":
        path = data_cfg.get("local_path")
        if not path:
            raise DataError("config data.local_path: required when data.source is 'local'")
        return read_local(path), str(Path(path).resolve())
    if source == "hub":
        hub = data_cfg.get("hub") or {}
        if not hub.get("path"):
            raise DataError("config data.hub.path: required when data.source is 'hub'")
        cache = hub_cache_dir or hub.get("cache_dir") or Path(download_dir) / "hub"
        rows = read_hub(hub, cache, **({"fetch": hub_fetch} if hub_fetch else {}))
        return rows, rows.origin
    # the schema rejects this first; kept for library callers
    raise DataError(f"config data.source: unknown value {source!r}")


def obtain_alpaca(data_cfg: dict, dest: str | os.PathLike, download_dir: str | os.PathLike,
                  hub_cache_dir: str | os.PathLike | None = None, hub_fetch=None) -> dict:
    """Write the validated instruction set named by ``data_cfg`` to ``dest``; return a summary.

    Every source but the miniature is read by ``read_source`` and mapped onto records by
    ``data.fields`` or ``data.format: messages`` (alpagasus.data.mapping); every record keeps its
    ``source_row``. Nothing is written unless every row passed.
    """
    dropped: Counter = Counter()
    details: dict = {}
    data_cfg = filled("data", data_cfg)
    if data_cfg["source"] == "miniature":
        m = data_cfg["miniature"]
        records = make_records(m["n_records"], m["corrupt_fraction"], m["seed"], m["families"])
        records = [{**rec, SOURCE_ROW: i} for i, rec in enumerate(records)]
        n_rows = len(records)
        origin = f"miniature(n={len(records)}, corrupt_fraction={m['corrupt_fraction']}, seed={m['seed']})"
        limit = None
    else:
        rows, origin = read_source(data_cfg, download_dir, hub_cache_dir, hub_fetch)
        n_rows = len(rows.rows)
        expected = data_cfg.get("expected_records")
        if expected is not None and n_rows != expected:
            raise DataError(f"{rows.origin}: expected {expected} records, found {n_rows} (data.expected_records: "
                            f"the source's row count, or null to skip the check)")
        records = iter_records_of(rows, data_cfg, dropped)
        details = rows.details
        limit = data_cfg.get("max_records")

    # The records are written as they are mapped (never all held: the data rule at 10M
    # records), with the index beside them (alpagasus.data.stream); nothing is renamed into
    # place unless every row passed. With max_records, a rehearsal on a slice: the first N,
    # in file order, every row checked all the same.
    max_chars = data_cfg["max_field_chars"]
    big: list = []
    n_big = empty = n_written = 0
    unit_sep = False  # a field holding \x1f: content hashes could collide (duplicates checked by content)
    with RecordsWriter(dest) as out:
        for i, rec in enumerate(records):
            if not rec["output"].strip():
                empty += 1
            if limit is not None and i >= limit:
                continue
            for field in FIELDS:
                if len(rec[field]) > max_chars:
                    n_big += 1
                    if len(big) < 100:
                        big.append((i, field, len(rec[field])))
                    log.warning("%s: record %d field %r has %d characters; it will be truncated in judge prompts",
                                origin, i, field, len(rec[field]))
                unit_sep = unit_sep or "\x1f" in rec[field]
            out.write(rec)
            n_written += 1
        if data_cfg["source"] != "miniature":
            for reason, n in dropped.items():
                log.warning("%s: %d of %d rows left out (%s)", origin, n, n_rows, reason)
            if empty:
                log.warning("%s: %d records have an empty output; they are rated like any other", origin, empty)
        if limit is not None:
            origin = f"{origin} (first {n_written} records)"
        dups = out.duplicate_groups(exact=unit_sep)
        if dups:
            log.warning(
                "%s: %d records are exact duplicates of another (%d groups); each is judged once via the cache",
                origin, sum(len(g) - 1 for g in dups), len(dups),
            )
    return {"origin": origin, **details, "source_rows": n_rows, "records": n_written, "dropped": dict(dropped),
            "duplicates": sum(len(g) - 1 for g in dups), "duplicate_groups": dups[:100],
            "oversized_fields": big}
