"""DEITA's diversity filter around any ranking, in blocked matrix products.

DEITA (Liu et al. 2024, "What Makes Good Data for Alignment?"; hkust-nlp/deita,
``src/deita/selection/filter/base.py``, ``IterativeFilter.filter``) sorts the records by score,
keeps the first, and walks down the ranking keeping a record only if its cosine similarity to
every record kept so far is at most ``threshold`` (0.9 by default), until ``data_size`` are
kept. With their ``batch_size`` of 1 that is a sequential rule; this module computes exactly that
rule (the same kept set, in the same order), fast:

- the candidates are taken ``block`` at a time; one matrix product gives each one's most similar
  record among those kept before the block (over the kept ones ``chunk`` at a time, so memory
  stays bounded), and drops every candidate already too close to one;
- the survivors of a block are compared with each other in one more product, and only this
  block-sized Gram matrix is walked in order, to apply the rule among records of the same block.

The work is a few dense float32 products (BLAS on every core), and the only Python loop runs
once per surviving candidate over a row of at most ``block`` values. (DEITA's own code with a
batch size above 1 compares a candidate with earlier candidates of its batch even when those
were dropped, so its result then depends on the batch size; this one does not.)

The same walk removes near-duplicates (:mod:`alpagasus.selection.near_duplicates`): there a
candidate is dropped when its similarity to a kept record is ``>= cosine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK = 1024
CHUNK = 8192


@dataclass
class Walk:
    """What a walk down a ranking did: the kept records (in ranking order); for each dropped
    one, the kept record most similar to it (among those kept before it) and that similarity;
    and how many candidates it looked at before it had ``k``."""

    kept: list[int]
    dropped: dict[int, tuple[int, float]] = field(default_factory=dict)
    walked: int = 0


def _too_close(sim: np.ndarray, tau: float | None, cosine: float | None) -> np.ndarray:
    out = np.zeros(sim.shape, dtype=bool)
    if tau is not None:
        out |= sim > tau
    if cosine is not None:
        out |= sim >= cosine
    return out


def walk(emb: np.ndarray, order, *, tau: float | None = None, cosine: float | None = None,
         k: int | None = None, block: int = BLOCK, chunk: int = CHUNK) -> Walk:
    """Walk ``order`` (record indices, best first) over the unit rows ``emb`` and keep a record
    unless its cosine similarity to a record kept before it is ``> tau`` (DEITA) or ``>= cosine``
    (a near-duplicate), stopping once ``k`` are kept (None: walk the whole ranking)."""
    order = np.asarray(order, dtype=np.int64)
    if tau is None and cosine is None:
        raise ValueError("walk needs tau (diversity) or cosine (near-duplicates)")
    if len(order) and (order.min() < 0 or order.max() >= len(emb)):
        raise ValueError(f"the ranking names record {int(order.max())} of an embedding of {len(emb)} rows")
    dim = emb.shape[1]
    cap = len(order) if k is None else min(k, len(order))
    kept_rows = np.empty((cap, dim), dtype=np.float32)
    kept: list[int] = []
    dropped: dict[int, tuple[int, float]] = {}
    walked = 0
    for start in range(0, len(order), block):
        if len(kept) >= cap:
            break
        cand = order[start:start + block]
        # only the block's rows: ``emb`` may be memory-mapped (by_signal's UnitRows)
        c = np.ascontiguousarray(emb[cand], dtype=np.float32)
        n_kept = len(kept)
        best = np.full(len(cand), -np.inf, dtype=np.float32)
        arg = np.full(len(cand), -1, dtype=np.int64)
        for c0 in range(0, n_kept, chunk):
            sims = c @ kept_rows[c0:min(n_kept, c0 + chunk)].T
            j = sims.argmax(axis=1)
            v = sims[np.arange(len(cand)), j]
            better = v > best
            best[better] = v[better]
            arg[better] = c0 + j[better]
        alive = np.flatnonzero(~_too_close(best, tau, cosine))
        gram = c[alive] @ c[alive].T
        close = np.tril(_too_close(gram, tau, cosine), -1)  # close[t, u]: u ranked before t, too close
        keep = ~close.any(axis=1)  # too close to no earlier candidate: kept whatever the others do
        for t in np.flatnonzero(~keep):  # the rest in ranking order: kept unless close to one kept
            keep[t] = not (close[t, :t] & keep[:t]).any()
        local = np.flatnonzero(keep)
        stop = None
        if n_kept + len(local) >= cap:  # the k-th kept ends the walk: what follows is not looked at
            local = local[:cap - n_kept]
            stop = int(alive[local[-1]])
        for t in np.flatnonzero(~keep):
            if stop is not None and alive[t] > stop:
                break
            # Dropped for a record kept earlier in the block: the nearest of those (it is nearer
            # than any kept before the block, which were not too close).
            earlier = local[local < t]
            j = int(earlier[gram[t, earlier].argmax()])
            dropped[int(cand[alive[t]])] = (int(cand[alive[j]]), float(gram[t, j]))
        # Candidates of the block past the k-th kept one were never looked at.
        seen = len(cand) if stop is None else stop + 1
        for i in np.flatnonzero(_too_close(best[:seen], tau, cosine)):
            dropped[int(cand[i])] = (kept[arg[i]], float(best[i]))
        walked += seen
        rows = alive[local]
        kept_rows[n_kept:n_kept + len(rows)] = c[rows]
        kept.extend(int(r) for r in cand[rows])
    return Walk(kept=kept, dropped=dropped, walked=walked)


def diversity_filter(emb: np.ndarray, order, tau: float, k: int | None = None, **kw) -> list[int]:
    """DEITA's rule: the records of ``order`` kept, in ranking order (see :func:`walk`)."""
    return walk(emb, order, tau=tau, k=k, **kw).kept
