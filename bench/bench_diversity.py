"""DEITA's diversity filter at Alpaca's size: the blocked walk (selection/diversity.py) against a
naive per-candidate NumPy loop, in one run.

52,002 random unit vectors of dimension 384 (all-MiniLM-L6-v2's), ranked in their own order,
k = 9,229 (the paper's 9k), tau = DEITA's default (the schema's). The naive loop (one
matrix-vector product per candidate against the records kept so far, as a reader of the rule
would write it) is timed on the first --sample candidates, and so is the blocked walk on the
same candidates: both must keep the same records, and their ratio is the speed-up. Also timed:
near-duplicate removal over all the records with no k (every record compared with every kept
one: the largest walk a selector does), and, when faiss is installed, the same walk with faiss's
exact inner-product index for the comparisons with the kept records.

    python bench/bench_diversity.py [--records 52002] [--dim 384] [--k 9229] [--sample 2000] [--out r.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alpagasus.core.config import filled  # noqa: E402
from alpagasus.selection.diversity import BLOCK, _too_close, walk  # noqa: E402
from _report import report  # noqa: E402  (bench/_report.py)


def naive(x: np.ndarray, order, tau: float, k: int) -> list[int]:
    kept_rows = np.empty((min(k, len(order)), x.shape[1]), dtype=np.float32)
    kept: list[int] = []
    for i in order:
        if len(kept) >= k:
            break
        if not kept or float((kept_rows[:len(kept)] @ x[i]).max()) <= tau:
            kept_rows[len(kept)] = x[i]
            kept.append(int(i))
    return kept


def faiss_walk(x: np.ndarray, order, k: int | None = None, tau=None, cosine=None, block: int = BLOCK) -> list[int]:
    """The blocked walk with the comparisons against the kept records done by faiss."""
    import faiss

    k = len(order) if k is None else k
    index = faiss.IndexFlatIP(x.shape[1])
    kept: list[int] = []
    for start in range(0, len(order), block):
        if len(kept) >= k:
            break
        cand = np.asarray(order[start:start + block])
        c = np.ascontiguousarray(x[cand])
        best = index.search(c, 1)[0][:, 0] if kept else np.full(len(cand), -np.inf, dtype=np.float32)
        alive = np.flatnonzero(~_too_close(best, tau, cosine))
        gram = c[alive] @ c[alive].T
        local: list[int] = []
        for t in range(len(alive)):
            if local and _too_close(gram[t, local].max(keepdims=True), tau, cosine)[0]:
                continue
            local.append(t)
            if len(kept) + len(local) >= k:
                break
        index.add(c[alive[local]])
        kept.extend(int(r) for r in cand[alive[local]])
    return kept


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=52002)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=9229)
    p.add_argument("--sample", type=int, default=2000, help="candidates the naive loop is timed on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()

    knobs = filled("selector", {"signal": "s", "method": "top_k", "diversity": {"embedding": "e"},
                                "dedupe": {"embedding": "e"}})
    tau, cosine = knobs["diversity"]["tau"], knobs["dedupe"]["cosine"]
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.records, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = np.arange(args.records)

    full, full_s = timed(walk, x, order, tau=tau, k=args.k)
    sample = order[:args.sample]
    naive_kept, naive_s = timed(naive, x, sample, tau, args.k)
    blocked_kept, blocked_s = timed(walk, x, sample, tau=tau, k=args.k)
    dedupe, dedupe_s = timed(walk, x, order, cosine=cosine)
    result = {
        "records": args.records, "dim": args.dim, "k": args.k, "tau": tau, "cpus": os.cpu_count(),
        "kept": len(full.kept), "walked": full.walked,
        "blocked_s": round(full_s, 3),
        "sample": len(sample),
        # Microseconds: the sample walks take milliseconds, and the speedup is read back from these.
        "naive_sample_s": round(naive_s, 6), "blocked_sample_s": round(blocked_s, 6),
        "same_kept_set_on_sample": naive_kept == blocked_kept.kept,
        "speedup_over_naive": round(naive_s / blocked_s, 2),
        "dedupe_cosine": cosine, "dedupe_all_records_s": round(dedupe_s, 3), "dedupe_kept": len(dedupe.kept),
    }
    try:
        import faiss  # noqa: F401
    except ImportError:
        result["faiss"] = None
    else:
        kept, faiss_s = timed(faiss_walk, x, order, args.k, tau=tau)
        kept_d, faiss_d_s = timed(faiss_walk, x, order, cosine=cosine)
        result["faiss"] = {"walk_s": round(faiss_s, 3), "same_kept_set": kept == full.kept,
                           "dedupe_all_records_s": round(faiss_d_s, 3), "same_dedupe_kept": kept_d == dedupe.kept,
                           "blocked_time_over_faiss_time": round(full_s / faiss_s, 2),
                           "dedupe_blocked_time_over_faiss_time": round(dedupe_s / faiss_d_s, 2)}
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
