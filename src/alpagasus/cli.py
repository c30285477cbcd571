"""Command line for the library, outside Snakemake: `alpagasus rate|estimate|batches ...`.

Configs are the pipeline's own (config/config.yaml plus overlays), merged and validated the
same way, so a command here does exactly what the rule would.
"""

from __future__ import annotations

import argparse
import sys

from . import config as config_mod
from . import logs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alpagasus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("rate", "rate every record with the configured judge"),
                        ("estimate", "requests, tokens and dollars that rating would spend now")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", action="append", required=True,
                       help="config file; repeat for overlays (merged in order)")
        p.add_argument("--records", required=True, help="Alpaca-format JSON")
        p.add_argument("--out", required=True, help="scores.jsonl (rate) or estimate JSON")
        p.add_argument("--ledger", help="cost ledger JSON (rate)")
        p.add_argument("--log")
        p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("batches", help="the Batch API batches recorded in a cache dir: status and counts")
    p.add_argument("--cache-dir", required=True, help="the pipeline's cache_dir (config key cache_dir)")
    p.add_argument("--cancel", action="store_true", help="cancel the unfinished batches")
    p.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    args = ap.parse_args(argv)
    if args.cmd == "batches":
        return _batches(args)
    cfg = config_mod.load(*args.config)
    logs.setup(args.log, [j.get("api_key_env", "") for j in cfg["judges"].values()])

    from .data import load_records
    from .rating import IncompleteRatingError, estimate_rating, rate_records

    records = load_records(args.records)
    mfc = cfg["data"].get("max_field_chars", 20000)
    if args.cmd == "estimate":
        estimate_rating(records, cfg["judges"], cfg["rating"], cfg["cache_dir"], args.out, max_field_chars=mfc)
        return 0
    try:
        rate_records(records, cfg["judges"], cfg["rating"], cfg["cache_dir"], args.out,
                     args.ledger or args.out + ".cost.json", max_field_chars=mfc, progress=not args.no_progress)
    except IncompleteRatingError as exc:
        print(f"alpagasus: {exc}", file=sys.stderr)
        return 3
    return 0


def _batches(args) -> int:
    import json

    from .judges.openai_batch import batch_status

    try:
        rows = batch_status(args.cache_dir, cancel=args.cancel)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"alpagasus: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    cols = ("chunk", "batch_id", "status", "requests", "completed", "failed", "results_read")
    table = [cols] + [tuple("-" if r.get(c) is None else str(r.get(c)) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    if args.cancel:
        n = sum(1 for r in rows if r.get("cancel_requested"))
        print(f"cancel requested for {n} batch(es); a rerun sends their unanswered requests again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
