"""Rating split over independent jobs (``rating.shards: N``) and gathered back into one file.

Shard ``i`` of ``N`` rates the contiguous records ``[i*n//N, (i+1)*n//N)``, so the gather is a
concatenation in input order. Every shard shares the one judgement cache (its claims keep two
shards from paying for the same key at once; a record duplicated across shards is paid once).

The budget: ``rating.max_usd`` holds for all shards together, not N times. Each shard may spend
its share, ``max_usd`` times its share of the records; the shares add up to ``max_usd``. A static
split needs no lock shared by jobs on different nodes (which a cluster filesystem may not honour),
at the price that a shard whose share runs out stops while another has money left: raising
``max_usd`` and rerunning sends only what is missing.

A shard's rows carry two fields more than scores.jsonl's, the request ``key`` and the record's
``record_hash``: the gather checks each row against its record (count, index, content), recomputes
the ``duplicate_of_*`` flags across the whole set (a shard sees only its own records), and drops
both fields, so the gathered file equals an unsharded run's row for row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from alpagasus.core.io import write_json
from alpagasus.data import content_hash

SHARD_FIELDS = ("key", "record_hash")
DUPLICATE_FLAG = "duplicate_of_"


class ShardMismatchError(ValueError):
    """A shard's rows do not match the records it was meant to rate."""


def shard_range(n_records: int, shard: int, shards: int) -> tuple[int, int]:
    """[start, stop) of shard ``shard`` (0-based) of ``shards`` over ``n_records`` records."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    return shard * n_records // shards, (shard + 1) * n_records // shards


def shard_budget(max_usd: float | None, start: int, stop: int, n_records: int) -> float | None:
    """The shard's share of ``max_usd``: in proportion to the records it rates."""
    if max_usd is None or n_records == 0:
        return max_usd
    return max_usd * (stop - start) / n_records


def gather(records, shard_scores: list[str | Path], shard_costs: list[str | Path],
           scores_path: str | Path, cost_path: str | Path, *, max_usd: float | None) -> dict:
    """Check and concatenate the shards' rows into ``scores_path``; their ledgers, summed, into
    ``cost_path``. Returns the gathered ledger.

    ``records``: the records (a list), or their RecordsIndex (alpagasus.data.stream: their
    content hashes, read a chunk at a time, at any size). The rows go through one at a time to
    scores.jsonl's temporary file, renamed into place after the cost file, as before; a shard
    that does not match stops the gather before anything is renamed."""
    from alpagasus.core.io import atomic_open
    from alpagasus.judging.duplicates import FirstSeen

    indexed = hasattr(records, "hash_hex")  # a RecordsIndex
    n = len(records)
    shards = len(shard_scores)
    first = FirstSeen()
    with atomic_open(scores_path) as out:
        for i, path in enumerate(shard_scores):
            start, stop = shard_range(n, i, shards)
            count = sum(1 for line in open(path, encoding="utf-8") if line.strip())
            if count != stop - start:
                raise ShardMismatchError(f"{path}: {count} rows, but shard {i} of {shards} rates records "
                                         f"{start}..{stop - 1} ({stop - start}); rerun the shard (delete the file)")
            batch: list[dict] = []
            for offset, row in enumerate(_rows(path)):
                index = start + offset
                missing = [f for f in ("index", *SHARD_FIELDS) if f not in row]
                if missing:
                    raise ShardMismatchError(f"{path}: row {offset} has no {', '.join(missing)} (not a shard's file)")
                if row["index"] != index:
                    raise ShardMismatchError(f"{path}: row {offset} has index {row['index']}, expected {index}")
                want = records.hash_hex(index) if indexed else content_hash(records[index])
                if row["record_hash"] != want:
                    raise ShardMismatchError(f"{path}: row {offset} (record {index}) is not the rating of record "
                                             f"{index}: its content hash differs (the records changed since the shard ran?)")
                batch.append(row)
                if len(batch) >= GATHER_BATCH:
                    _write_batch(out, batch, first)
                    batch = []
            _write_batch(out, batch, first)
        ledgers = [json.loads(Path(p).read_text()) for p in shard_costs]
        ledger = {**summed(ledgers), "budget_usd": max_usd, "shards": shards, "shard_ledgers": ledgers}
        write_json(cost_path, ledger)
    return ledger


GATHER_BATCH = 50_000


def _write_batch(out, rows: list[dict], first) -> None:
    """The duplicate flags recomputed over the whole set, the shard fields dropped, written."""
    if not rows:
        return
    earlier = first.resolve([r["key"] for r in rows], rows[0]["index"])
    for row, was in zip(rows, earlier):
        flags = [f for f in row["flags"] if not f.startswith(DUPLICATE_FLAG)]
        if was is not None:
            flags.append(f"{DUPLICATE_FLAG}{was}")
        row["flags"] = flags
        for f in SHARD_FIELDS:
            del row[f]
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rows(path) -> Iterator[dict]:
    """A JSONL file's rows, one at a time (read_jsonl's, and its error)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON: {exc.msg}") from None


def summed(ledgers: list[dict]) -> dict:
    """One ledger of several: numbers added (nested too), other values kept where all agree."""
    out: dict = {}
    for key in dict.fromkeys(k for lg in ledgers for k in lg):
        values = [lg[key] for lg in ledgers if key in lg]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            total = sum(values)
            out[key] = round(total, 6) if isinstance(total, float) else total
        elif all(isinstance(v, dict) for v in values):
            out[key] = summed(values)
        else:
            out[key] = values[0] if all(v == values[0] for v in values) else None
    return out
