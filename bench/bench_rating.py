"""Rating throughput: the pipeline's concurrent, rate-limited client vs a one-at-a-time loop.

Rates the real 52,002 Alpaca records (../shared/data/alpaca) through the fake OpenAI server
(a separate process, so client and server do not share one interpreter) with a fixed
per-request latency and a requests-per-minute cap, and in the same run a sequential loop over
a sample. Prints both rates, their ratio and the fraction of the cap reached.

    python bench/bench_rating.py                       # the issue's setting: 100 ms, 6,000 rpm
    python bench/bench_rating.py --latency-ms 1000 --limit 6000   # a realistic judge latency

Note the bound: a sequential loop cannot beat 1/latency requests a second, so the ratio is at
most cap / (1/latency): 10x at 100 ms and 6,000 rpm, 100x at 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import openai  # noqa: E402

from alpagasus.data import load_records  # noqa: E402
from alpagasus.judging.prompts import rating_messages  # noqa: E402
from alpagasus.judging.rating import rate_records  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)


def start_server(latency_ms: float, rpm_cap: float, log: str | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpagasus.testing.fake_openai", "--latency-ms", str(latency_ms),
         "--rpm-cap", str(rpm_cap), "--port", "0", *(["--log", log] if log else [])],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    line = proc.stdout.readline().split()
    assert line and line[0] == "BASE_URL", f"server did not start: {line}"
    return proc, line[1]


async def sequential(records, base_url: str, n: int) -> float:
    """The naive way: one request, wait for the answer, the next."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    t0 = time.perf_counter()
    for rec in records[:n]:
        await client.chat.completions.create(
            model="bench-seq", messages=rating_messages(rec["instruction"], rec["input"], rec["output"]),
            temperature=0.0, top_p=1.0, max_tokens=256)
    dt = time.perf_counter() - t0
    await client.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", default=str(REPO.parent / "shared/data/alpaca/alpaca_data.json"))
    ap.add_argument("--limit", type=int, default=None, help="rate only the first N records")
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--rpm", type=float, default=6000)
    ap.add_argument("--concurrency", type=int, default=None, help="default: enough to fill the cap")
    ap.add_argument("--sequential-sample", type=int, default=60)
    ap.add_argument("--out", help="also write the figures here (JSON)")
    ap.add_argument("--server-log", help="the server's own log of every request (JSON lines, arrival and "
                                         "reply times): the timings as the server saw them")
    args = ap.parse_args()

    records = load_records(args.records)[: args.limit]
    cap_rps = args.rpm / 60
    concurrency = args.concurrency or int(cap_rps * args.latency_ms / 1000 * 1.5) + 8
    server, base_url = start_server(args.latency_ms, args.rpm, args.server_log)
    os.environ["BENCH_KEY"] = "sk-bench"
    try:
        seq_rps = asyncio.run(sequential(records, base_url, args.sequential_sample))
        judge = {"backend": "openai", "model": "bench", "base_url": base_url, "api_key_env": "BENCH_KEY",
                 "concurrency": concurrency, "requests_per_minute": args.rpm, "timeout_s": 30,
                 "max_retries": 8}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            ledger = rate_records(records, {"bench": judge}, {"judge": "bench", "max_usd": None},
                                  Path(tmp) / "cache", Path(tmp) / "scores.jsonl", Path(tmp) / "cost.json")
            dt = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait()
    sent = ledger["judgements_paid_this_run"]
    rps = sent / dt
    result = {
        "records": len(records), "latency_ms": args.latency_ms, "cap_rpm": args.rpm, "concurrency": concurrency,
        "seconds": round(dt, 1), "pipeline_req_per_s": round(rps, 2), "sequential_req_per_s": round(seq_rps, 2),
        "ratio_vs_sequential": round(rps / seq_rps, 1), "fraction_of_cap": round(rps / cap_rps, 3),
        "requests_sent_incl_retries": ledger["requests_sent"], "rate_limited_or_failed": ledger["failed_requests_by_kind"],
        "status_counts": ledger["status_counts"],
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
