"""Near-duplicate removal over a ranking, with the clusters it found.

Walking the ranking best first (:func:`alpagasus.selection.diversity.walk`), a record whose
cosine similarity to a record already kept is ``>= cosine`` is a near-duplicate of the most
similar such record and is dropped; otherwise it is kept. So of each group of near-duplicates
the best-ranked one stays, every member of a cluster is within ``cosine`` of the record that
represents it (no chaining: A ~ B and B ~ C does not put C with A unless C ~ A), and the walk
is one pass of blocked matrix products, never a loop over pairs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from alpagasus.selection.diversity import Walk, walk


def clusters_of(result: Walk, cosine: float) -> list[dict]:
    """The near-duplicate clusters of a walk: each kept record with the dropped records whose
    nearest kept record it is at similarity ``>= cosine``, best-ranked first in the ranking."""
    members: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for rec, (rep, sim) in result.dropped.items():
        if sim >= cosine:
            members[rep].append((rec, sim))
    rank = {r: i for i, r in enumerate(result.kept)}
    return [{"kept": rep,
             "duplicates": [r for r, _ in sorted(members[rep])],
             "cosine": [round(s, 6) for _, s in sorted(members[rep])]}
            for rep in sorted(members, key=rank.__getitem__)]


def remove_near_duplicates(emb: np.ndarray, order, cosine: float, k: int | None = None) -> tuple[list[int], list[dict]]:
    """The records of ``order`` kept (ranking order) and the clusters of those dropped."""
    result = walk(emb, order, cosine=cosine, k=k)
    return result.kept, clusters_of(result, cosine)
