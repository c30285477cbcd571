"""Command line for the library, outside Snakemake: `alpagasus rate|estimate|check-config|batches|publish`.

Configs are the pipeline's own (config/config.yaml plus overlays), merged and validated the
same way, so a command here does exactly what the rule would. A mistake in the data or the
config is one line naming the file, record or key (exit 2); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from alpagasus.core import config as config_mod
from alpagasus.core import logs

log = logging.getLogger("alpagasus")

EXIT_BAD_INPUT = 2   # data, config, unwritable paths: nothing was sent
EXIT_INCOMPLETE = 3  # the run stopped or left records without a judgement: all paid is cached


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="alpagasus")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("rate", "rate every record with the configured judge"),
                        ("estimate", "requests, tokens and dollars that rating would spend now")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", action="append", required=True,
                       help="config file; repeat for overlays (merged in order)")
        p.add_argument("--records", required=True,
                       help="Alpaca-format records: a JSON list, or JSONL (one record a line)")
        p.add_argument("--out", required=True, help="scores.jsonl (rate) or estimate JSON")
        p.add_argument("--ledger", help="cost ledger JSON (rate)")
        p.add_argument("--log", metavar="FILE",
                       help="also write the log to FILE (secrets redacted); it ends with the error, if any")
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bar on stderr while rating (for logs and CI)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("check-config", help="validate config files (with overlays) and say what is wrong")
    p.add_argument("config", nargs="+", help="config file, then overlays in order")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("batches", help="the Batch API batches recorded in a cache dir: status and counts")
    p.add_argument("--cache-dir", required=True, help="the pipeline's cache_dir (config key cache_dir)")
    p.add_argument("--cancel", action="store_true", help="cancel the unfinished batches")
    p.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("publish", help="upload a selection's release (rule release) to the Hugging Face Hub")
    p.add_argument("--selection", required=True, help="the selection's name (alpagasus, random, an extra, a selector)")
    p.add_argument("--repo", required=True, help="the dataset repository, ORG/NAME (created if absent)")
    p.add_argument("--results", default="results", help="the run's results directory (config key results_dir)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return ap


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alpagasus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed: no package metadata)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from alpagasus.data import DataError
    from alpagasus.judging.judges import JudgeFatalError
    from alpagasus.judging.rating import IncompleteRatingError

    try:
        return _run(args)
    except (config_mod.ConfigError, DataError, JudgeFatalError, OSError, KeyError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _to_log(message)
        print(f"alpagasus: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except IncompleteRatingError as exc:
        if args.debug:
            raise
        _to_log(str(exc))
        print(f"alpagasus: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE


def _to_log(message: str) -> None:
    """The log file (--log) ends with the same line the user sees."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None))


def _run(args) -> int:
    if args.cmd == "batches":
        return _batches(args)
    if args.cmd == "publish":
        from pathlib import Path

        from alpagasus.reporting.release import publish

        url = publish(Path(args.results) / "release" / args.selection, args.repo, private=args.private)
        print(f"published {args.selection} to {url}")
        return 0
    if args.cmd == "check-config":
        paths = args.config if len(args.config) > 1 or "config.yaml" in args.config[0] else \
            [str(config_mod.REPO / "config" / "config.yaml"), *args.config]
        config_mod.check_workflow_inputs(config_mod.load(*paths))
        print(f"{' + '.join(paths)}: valid")
        return 0
    cfg = config_mod.load(*args.config)
    logs.setup(args.log, [j.get("api_key_env", "") for j in cfg["judges"].values()])

    from alpagasus.data import load_records
    from alpagasus.data.stream import count_records, iter_records
    from alpagasus.judging.rating import estimate_rating, rate_records

    mfc = cfg["data"]["max_field_chars"]
    if args.cmd == "estimate":
        estimate_rating(load_records(args.records), cfg["judges"], cfg["rating"], cfg["cache_dir"], args.out,
                        max_field_chars=mfc)
        return 0
    # streamed as rule rate streams them: counted (every record validated) first, then rated
    n_records = count_records(args.records)
    rate_records(iter_records(args.records), cfg["judges"], cfg["rating"], cfg["cache_dir"], args.out,
                 args.ledger or args.out + ".cost.json", max_field_chars=mfc, progress=not args.no_progress,
                 n_records=n_records)
    return 0


def _batches(args) -> int:
    import json

    from alpagasus.judging.judges.openai_batch import batch_status

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
