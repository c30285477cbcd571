"""Scale: N synthetic records through data -> rate -> select, with every judgement already paid.

    python bench/bench_scale.py --records 2000000 --json scale.json
    python bench/bench_scale.py --records 100000 --live 100000 --rpm 30000   # live rating too

What it does, each stage a process of its own (so each has its own peak RSS):

1. ``data``: N unique synthetic records (generated here into a temporary directory, never
   committed) read by the data rule's entry point (``obtain_alpaca``, source ``local``) into
   ``alpaca_52k.json``.
2. ``fill_store``: the judgement store filled through its own write path (``put_many``, the
   path a migration takes) with a reply for every record's request key, as if every judgement
   had been paid.
3. ``rate_cached_rerun``: the rate rule's entry point (``rate_records``) against the fake OpenAI
   server (a separate process); ``requests_sent`` is the server's own log of requests received,
   which must be 0.
4. ``select``: the select rule's entry point (``write_selection``, threshold 4.5).
5. ``live`` (``--live M``): M fresh records rated through the fake server at ``--rpm``
   (30,000 by default) with 100 ms latency: the fraction of the cap reached.

Then, independent of the stages (``--store-n``, 1M by default), the store against today's JSON
lines cache (bench/_jsonl_store.py: the store before SQLite, verbatim): appends (each one
``put``, durable when it returns), opening, lookups of present and absent keys, peak RSS, the
files' sizes, and migrating the JSON lines file into the store. Ratios are SQLite / JSONL.

Prints, and writes to ``--json``: ``{"records": N, "stages": {...}, "store": {...}}``, each stage
with ``s`` (wall seconds of the stage's call, imports excluded) and ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(BENCH))

from _report import report  # noqa: E402  (bench/_report.py)

JUDGE = "fake"
RATING = {"judge": JUDGE, "dimension": "accuracy", "max_usd": None}
RULE = {"method": "threshold", "threshold": 4.5}
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def judges(base_url: str, rpm: float | None = None, concurrency: int = 64) -> dict:
    return {JUDGE: {"backend": "openai", "model": "bench-scale", "base_url": base_url, "api_key_env": "BENCH_KEY",
                    "temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "concurrency": concurrency,
                    "requests_per_minute": rpm, "timeout_s": 30, "max_retries": 8,
                    "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0}}


def synthetic_record(i: int, salt: str = "") -> dict:
    rnd = random.Random(f"{salt}{i}")
    words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 30)))
    return {"instruction": f"Task {salt}{i}: explain {words}.", "input": "" if i % 3 else f"Context {i}: {words}",
            "output": f"Answer {i}: " + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(10, 60)))}


def write_source(path: Path, n: int, salt: str = "") -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps(synthetic_record(i, salt)) + "\n")


# -- the stages, each run in its own process (`--stage NAME`) -------------------------------------

def stage_data(work: Path, args) -> dict:
    from alpagasus.data.acquire import obtain_alpaca

    t0 = time.perf_counter()
    summary = obtain_alpaca({"source": "local", "local_path": str(work / "source.jsonl"), "expected_records": None},
                            work / "alpaca_52k.json", work / "download")
    return {"s": time.perf_counter() - t0, "records_written": summary.get("records", summary.get("n_records"))}


def stage_fill_store(work: Path, args) -> dict:
    from itertools import islice

    from alpagasus.core.config import filled
    from alpagasus.data.stream import iter_records
    from alpagasus.judging.cache import JudgementCache
    from alpagasus.judging.judges import make_judge
    from alpagasus.judging.prompts import rating_prompt_version
    from alpagasus.judging.rating import MAX_FIELD_CHARS, build_requests

    t0 = time.perf_counter()
    judge = make_judge(JUDGE, filled("judges.*", judges("http://127.0.0.1:9")[JUDGE]))
    rating = filled("rating", RATING)
    version = rating_prompt_version(rating["dimension"], rating["prompt"])
    stage = f"rating:{work / 'scores.jsonl'}"
    records = iter_records(work / "alpaca_52k.json")  # streamed, as rule rate reads them
    n = i = 0
    with JudgementCache.in_dir(work / "cache") as cache:
        while chunk := list(islice(records, 10_000)):
            requests, _ = build_requests(chunk, judge, rating["dimension"], MAX_FIELD_CHARS, rating["prompt"])
            batch = []
            for req in requests:
                score = "4.5" if i % 3 == 0 else "3"
                batch.append({"key": req.key, "text": f"Score: {score}\nThe answer follows the instruction.",
                              "prompt_tokens": 150, "completion_tokens": 20, "model": "bench-scale",
                              "prompt_version": version, "usd": 0.00019, "time": time.time(), "stage": stage})
                i += 1
            n += cache.put_many(batch)
    return {"s": time.perf_counter() - t0, "judgements": n}


def stage_rate(work: Path, args) -> dict:
    from alpagasus.data.stream import count_records, iter_records
    from alpagasus.judging.rating import rate_records

    cached = args.stage == "rate_cached_rerun"
    server, base_url = start_server(work / f"{args.stage}.server.jsonl", latency_ms=0 if cached else args.latency_ms,
                                    rpm=None if cached else args.rpm)
    os.environ["BENCH_KEY"] = "sk-bench"
    src = work / ("alpaca_52k.json" if cached else "live.json")
    try:
        t0 = time.perf_counter()
        n_records = count_records(src)  # then streamed, as rule rate does (scripts/rate.py)
        rpm = None if cached else args.rpm
        concurrency = 64 if cached else int(args.rpm / 60 * args.latency_ms / 1000 * 1.5) + 8
        ledger = rate_records(iter_records(src), judges(base_url, rpm, concurrency), RATING, work / "cache",
                              work / f"{args.stage}.scores.jsonl", work / f"{args.stage}.cost.json", progress=False,
                              n_records=n_records)
        dt = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait()
    log = work / f"{args.stage}.server.jsonl"
    sent = sum(1 for _ in open(log)) if log.exists() else 0
    out = {"s": dt, "requests_sent": sent, "ledger_requests_sent": ledger["requests_sent"],
           "reused_from_cache": ledger["judgements_reused_from_cache"], "paid_now": ledger["judgements_paid_this_run"]}
    if not cached:
        out.update(cap_rpm=args.rpm, latency_ms=args.latency_ms, concurrency=concurrency,
                   fraction_of_cap=round(ledger["judgements_paid_this_run"] / dt / (args.rpm / 60), 3))
    return out


def stage_select(work: Path, args) -> dict:
    from alpagasus.selection.select import write_selection

    t0 = time.perf_counter()
    kept = write_selection(work / "alpaca_52k.json", work / "rate_cached_rerun.scores.jsonl", RULE,
                           work / "filtered.json")
    return {"s": time.perf_counter() - t0, "kept": len(kept)}


# -- the store against today's JSON lines cache --------------------------------------------------

def store_entry(i: int) -> dict:
    return {"key": hashlib.sha256(str(i).encode()).hexdigest(),
            "text": f"Score:{4.5 if i % 3 == 0 else 3}\nThe answer is relevant and clear; a few points could be "
                    f"explained more precisely.", "prompt_tokens": 157, "completion_tokens": 23}


def _store_class(kind: str):
    if kind == "jsonl":
        from _jsonl_store import JudgementCache
    else:
        from alpagasus.judging.cache import JudgementCache
    return JudgementCache


def store_append(work: Path, args) -> dict:
    """``put`` one judgement at a time, each durable when it returns: the live path."""
    cls = _store_class(args.kind)
    d = work / f"store_{args.kind}"
    t0 = time.perf_counter()
    with cls.in_dir(d) as cache:
        for i in range(args.store_n):
            e = store_entry(i)
            cache.put(e["key"], e["text"], e["prompt_tokens"], e["completion_tokens"], "bench-scale",
                      "63031f60ee67", 0.000203, stage="rating:/bench/scores.jsonl")
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    return {"s": dt, "appends_per_s": round(args.store_n / dt), "bytes": size}


def store_lookup(work: Path, args) -> dict:
    """Open the store (the JSONL one loads everything), then look up present and absent keys."""
    cls = _store_class(args.kind)
    rnd = random.Random(0)
    n = min(args.lookups, args.store_n)
    present = [store_entry(rnd.randrange(args.store_n))["key"] for _ in range(n)]
    absent = [hashlib.sha256(f"absent{i}".encode()).hexdigest() for i in range(n)]
    t0 = time.perf_counter()
    cache = cls.in_dir(work / f"store_{args.kind}")
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = sum(cache.get(k) is not None for k in present)
    misses = sum(k in cache for k in absent)
    t_look = time.perf_counter() - t0
    assert hits == n and misses == 0, (hits, misses)
    rss_lookups = peak_rss_mb()  # open + single lookups (the batch below holds its n results)
    # The engine's path: every key of a run at once (the store's get_many; a dict for the JSONL).
    t0 = time.perf_counter()
    many = cache.get_many(present) if hasattr(cache, "get_many") else {k: cache.get(k) for k in present}
    t_many = time.perf_counter() - t0
    assert len(many) == len(set(present))
    spent = cache.spent("rating:/bench/scores.jsonl")
    cache.close()
    return {"s": t_open + t_look, "open_s": round(t_open, 3), "lookups_per_s": round(2 * n / t_look),
            "batch_lookups_per_s": round(n / t_many),
            "spent_usd": round(spent, 4), "peak_rss_mb_open_and_lookups": rss_lookups}


def store_migrate(work: Path, args) -> dict:
    """Today's judgements.jsonl (written by the JSONL store) read into the SQLite store on open."""
    from alpagasus.judging.cache import JudgementCache

    d = work / "store_migrated"
    d.mkdir()
    os.link(work / "store_jsonl" / "judgements.jsonl", d / "judgements.jsonl")
    t0 = time.perf_counter()
    with JudgementCache.in_dir(d) as cache:
        dt = time.perf_counter() - t0
        n = len(cache)
    return {"s": dt, "judgements": n, "per_s": round(n / dt)}


STAGES = {"data": stage_data, "fill_store": stage_fill_store, "rate_cached_rerun": stage_rate, "live": stage_rate,
          "select": stage_select, "store_append": store_append, "store_lookup": store_lookup,
          "store_migrate": store_migrate}


def start_server(log: Path, latency_ms: float, rpm: float | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "alpagasus.testing.fake_openai", "--port", "0", "--latency-ms", str(latency_ms),
           "--log", str(log)]
    if rpm:
        cmd += ["--rpm-cap", str(rpm)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    line = proc.stdout.readline().split()
    assert line and line[0] == "BASE_URL", f"server did not start: {line}"
    return proc, line[1]


def run_stage(name: str, work: Path, args, **extra) -> dict:
    """One stage in a fresh process: its wall time and its own peak RSS."""
    out = work / f"{name}.{extra.get('kind', '')}.json"
    cmd = [sys.executable, __file__, "--stage", name, "--work", str(work), "--out-stage", str(out),
           "--records", str(args.records), "--store-n", str(args.store_n), "--lookups", str(args.lookups),
           "--rpm", str(args.rpm), "--latency-ms", str(args.latency_ms), "--kind", extra.get("kind", "sqlite")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if proc.returncode != 0:
        sys.exit(f"stage {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    print(f"{name}{' (' + extra['kind'] + ')' if 'kind' in extra else ''}: {json.dumps(result)}", file=sys.stderr,
          flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000, help="synthetic records through the stages")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--out", help="the same as --json (the other benches' name)")
    ap.add_argument("--store-n", type=int, default=1_000_000, help="judgements in the store comparison (0: skip)")
    ap.add_argument("--lookups", type=int, default=200_000, help="present and as many absent keys looked up")
    ap.add_argument("--live", type=int, default=0, help="also rate this many fresh records live (0: skip)")
    ap.add_argument("--rpm", type=float, default=30_000, help="the fake server's cap for --live")
    ap.add_argument("--latency-ms", type=float, default=100, help="the fake server's latency for --live")
    ap.add_argument("--work", help="keep the working files here (default: a temporary directory, removed)")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--out-stage", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="sqlite", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.stage:  # a child: one stage
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = STAGES[args.stage](Path(args.work), args)
        result["s"] = round(result["s"], 3)
        result["peak_rss_mb"] = peak_rss_mb()
        Path(args.out_stage).write_text(json.dumps(result))
        return

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_scale."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        write_source(work / "source.jsonl", args.records)
        stages = {"data": run_stage("data", work, args),
                  "fill_store": run_stage("fill_store", work, args),
                  "rate_cached_rerun": run_stage("rate_cached_rerun", work, args),
                  "select": run_stage("select", work, args)}
        if args.live:
            write_source(work / "live.json", args.live, salt="live")
            stages["live"] = run_stage("live", work, args)
        result = {"records": args.records, "cpus": len(os.sched_getaffinity(0)), "stages": stages}
        if args.store_n:
            store = {"judgements": args.store_n, "lookups": 2 * min(args.lookups, args.store_n)}
            for kind in ("jsonl", "sqlite"):
                store[kind] = {"append": run_stage("store_append", work, args, kind=kind),
                               "lookup": run_stage("store_lookup", work, args, kind=kind)}
            store["migrate_jsonl_to_sqlite"] = run_stage("store_migrate", work, args)
            j, q = store["jsonl"], store["sqlite"]
            store["ratio_sqlite_to_jsonl"] = {
                "appends_per_s": round(q["append"]["appends_per_s"] / j["append"]["appends_per_s"], 3),
                "lookups_per_s": round(q["lookup"]["lookups_per_s"] / j["lookup"]["lookups_per_s"], 3),
                "batch_lookups_per_s": round(q["lookup"]["batch_lookups_per_s"] / j["lookup"]["batch_lookups_per_s"], 3),
                "open_s": round(q["lookup"]["open_s"] / max(j["lookup"]["open_s"], 1e-6), 4),
                "open_and_lookups_peak_rss_mb": round(q["lookup"]["peak_rss_mb_open_and_lookups"]
                                                      / j["lookup"]["peak_rss_mb_open_and_lookups"], 3),
                "bytes": round(q["append"]["bytes"] / j["append"]["bytes"], 3),
            }
            result["store"] = store
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(result, args.json or args.out)


if __name__ == "__main__":
    main()
