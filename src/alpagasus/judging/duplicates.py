"""Which records repeat an earlier one's request, at any size: the ``duplicate_of_N`` flags of
scores.jsonl (rating, a window at a time, and the gather of its shards)."""

from __future__ import annotations

import hashlib

import numpy as np


class FirstSeen:
    """Which request keys came before, and at which record: 16 bytes and an int a distinct key
    (numpy, sorted), not a dict of 10M strings. ``resolve`` answers for one window in order."""

    def __init__(self):
        self.keys = np.zeros(0, "S16")
        self.first = np.zeros(0, np.int64)

    @staticmethod
    def _short(key: str) -> bytes:
        """A request key (a sha256 in hex) in 16 bytes; any other string by its own sha256."""
        if len(key) == 64:
            try:
                return bytes.fromhex(key[:32])
            except ValueError:
                pass
        return hashlib.sha256(key.encode("utf-8")).digest()[:16]

    def resolve(self, keys: list[str], first_index: int) -> list[int | None]:
        """For each key, the index of the first record with it, where that is an earlier one
        (records ``first_index``, ``first_index + 1``, ... carry ``keys``); else None."""
        local: dict[str, int] = {}
        out: list[int | None] = []
        for i, key in enumerate(keys, first_index):
            if key in local:
                out.append(local[key])
            else:
                local[key] = i
                out.append(None)
        if not local:
            return out
        new_keys = np.array([self._short(k) for k in local], dtype="S16")
        new_first = np.fromiter(local.values(), dtype=np.int64, count=len(local))
        pos = np.searchsorted(self.keys, new_keys)
        hit = pos < len(self.keys)
        hit[hit] = self.keys[pos[hit]] == new_keys[hit]
        if hit.any():
            uniq = list(local)
            earlier = {uniq[j]: f for j, f in zip(np.flatnonzero(hit).tolist(), self.first[pos[hit]].tolist())}
            for j, key in enumerate(keys):
                if key in earlier:
                    out[j] = earlier[key]  # the window's first of this key too
        fresh = ~hit
        order = np.argsort(new_keys[fresh])
        add_keys, add_first = new_keys[fresh][order], new_first[fresh][order]
        at = np.searchsorted(self.keys, add_keys)
        self.keys = np.insert(self.keys, at, add_keys)
        self.first = np.insert(self.first, at, add_first)
        return out
