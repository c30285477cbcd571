"""Tokenisation with Alpaca's labels, and token-efficient batches with exact example boundaries.

Stanford Alpaca's collator pads every per-device batch of 4 randomly ordered examples to its
longest member: on the real 52k with a LLaMA tokenizer about a third of the computed tokens are
padding. Here the examples of one optimizer step are packed into rows (first-fit decreasing)
and each example keeps its own attention block and position ids, so a packed row computes
exactly what the examples would compute one by one, without the padding:

* ``layout="rows"`` (sdpa / eager, CPU or GPU): rows of at most ``row_length`` tokens, padded to
  the longest row of the micro-batch, with an explicit block-diagonal causal mask
  ``(rows, 1, L, L)``. The mask is built here rather than inferred from position ids, because
  transformers only infers it when no KV cache is built and older versions never do.
* ``layout="flat"`` (flash-attention varlen): the rows of a micro-batch are concatenated into one
  row with position ids reset per example; the flash kernels read the boundaries from the
  position ids, so there is no padding and no mask at all.

The optimizer step keeps Alpaca's semantics: a fixed number of *examples* (the global batch,
128) per step, whatever the packing and the number of devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from alpagasus.data import validate_records
from alpagasus.data.template import alpaca_prompt

IGNORE_INDEX = -100
LAYOUTS = ("rows", "flat")


@dataclass(frozen=True)
class Example:
    """One tokenised example: Hugging Face's unshifted labels, -100 on every prompt token."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_supervised(self) -> int:
        """Tokens the loss is computed on (the response and eos; the first token is never one)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


def tokenize_records(
    records: Sequence[dict],
    tokenizer,
    max_length: int,
    template: str | None = None,
    source: str = "data",
) -> tuple[list[Example], dict]:
    """Alpaca's ``preprocess``: prompt + output + eos, truncated at ``max_length``, prompt masked.

    As in Stanford Alpaca's ``train.py`` the full text is tokenised in one piece and the first
    ``len(tokenize(prompt))`` labels are masked (the output follows ``### Response:`` directly).
    eos is appended as an id, not as the text ``</s>``: same result with LLaMA's tokenizer, and
    correct for tokenizers that would split the text. An example whose prompt alone fills
    ``max_length`` has nothing to learn from and is dropped (counted in the stats).
    """
    validate_records(list(records), source)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token")
    prompts = [alpaca_prompt(r["instruction"], r["input"], template) for r in records]
    fulls = [p + r["output"] for p, r in zip(prompts, records)]
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    examples: list[Example] = []
    n_truncated = n_dropped = 0
    for i, (p_ids, f_ids) in enumerate(zip(prompt_ids, full_ids)):
        ids = list(f_ids) + [eos]
        if len(ids) > max_length:
            ids = ids[:max_length]
            n_truncated += 1
        n_prompt = min(len(p_ids), len(ids))
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        ex = Example(tuple(ids), tuple(labels))
        if ex.n_supervised == 0:
            n_dropped += 1
            continue
        examples.append(ex)
    stats = {
        "n_records": len(records),
        "n_examples": len(examples),
        "n_truncated": n_truncated,
        "n_dropped_no_target": n_dropped,
        "n_tokens": sum(len(e) for e in examples),
        "n_supervised_tokens": sum(e.n_supervised for e in examples),
    }
    if not examples:
        raise ValueError(f"{source}: no example has a response token left after truncation at {max_length}")
    return examples, stats


# --- planning: which examples go in which row, micro-batch and device -------------------------

def ffd_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing bin packing of item indices into rows of ``capacity`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example of {n} tokens does not fit a row of {capacity}")
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


def _split_even(items: list, n: int) -> list[list]:
    """``n`` contiguous chunks whose sizes differ by at most one (some empty if len < n)."""
    q, r = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + q + (1 if k < r else 0)
        out.append(items[start:end])
        start = end
    return out


def plan_step(
    example_ids: Sequence[int],
    lengths: Sequence[int],
    *,
    world_size: int = 1,
    packing: bool = True,
    row_length: int = 512,
    rows_per_micro: int = 4,
) -> list[list[list[list[int]]]]:
    """Plan one optimizer step: ``plan[rank][micro][row] -> example ids``.

    Every rank gets the same number of micro-batches (FSDP/DDP run collectives in each forward
    and backward, so a rank with fewer would hang the others); a rank short of rows gets an empty
    micro-batch, which the trainer runs as a dummy. The plan is a pure function of its inputs,
    so every rank computes the whole plan and takes its own part, with no communication.

    ``packing=False`` is Stanford Alpaca's reference: one example per row, the step's random
    order, interleaved over ranks as a DistributedSampler would, ``rows_per_micro`` per batch.
    """
    if world_size < 1 or rows_per_micro < 1:
        raise ValueError("world_size and rows_per_micro must be >= 1")
    ids = list(example_ids)
    if packing:
        rows = [[ids[j] for j in row] for row in ffd_pack([lengths[i] for i in ids], row_length)]
        row_tokens = [sum(lengths[i] for i in row) for row in rows]
        order = sorted(range(len(rows)), key=lambda r: (-row_tokens[r], r))
        per_rank: list[list[list[int]]] = [[] for _ in range(world_size)]
        load = [0] * world_size
        # Longest-processing-time assignment balances tokens (hence time) across devices.
        for r in order:
            k = min(range(world_size), key=lambda q: (load[q], len(per_rank[q]), q))
            per_rank[k].append(rows[r])
            load[k] += row_tokens[r]
        for k in range(world_size):
            per_rank[k].sort(key=lambda row: -sum(lengths[i] for i in row))
    else:
        per_rank = [[[i] for i in ids[k::world_size]] for k in range(world_size)]
    n_micro = max(1, max(math.ceil(len(rows) / rows_per_micro) for rows in per_rank))
    if packing:
        return [_split_even(rows, n_micro) for rows in per_rank]
    out = []
    for rows in per_rank:
        micros = [rows[m * rows_per_micro:(m + 1) * rows_per_micro] for m in range(n_micro)]
        out.append(micros)
    return out


def micro_batch_slots(rows: Sequence[Sequence[int]], lengths: Sequence[int], layout: str = "rows") -> int:
    """Token positions a micro-batch computes: rows x longest row, or the sum when flattened."""
    row_tokens = [sum(lengths[i] for i in row) for row in rows]
    if not row_tokens:
        return 1  # the dummy micro-batch computes one pad token
    if layout == "flat":
        return sum(row_tokens)
    return len(row_tokens) * max(row_tokens)


def step_token_counts(plan, lengths: Sequence[int], supervised: Sequence[int] | None = None,
                      layout: str = "rows") -> dict:
    """Real tokens, computed slots and supervised tokens of one planned step, all ranks."""
    tokens = slots = sup = 0
    for rank_plan in plan:
        for rows in rank_plan:
            slots += micro_batch_slots(rows, lengths, layout)
            for row in rows:
                tokens += sum(lengths[i] for i in row)
                if supervised is not None:
                    sup += sum(supervised[i] for i in row)
    return {"tokens": tokens, "slots": slots, "supervised": sup}


# --- tensors -----------------------------------------------------------------------------------

def shifted_targets(ex: Example) -> list[int]:
    """Position j predicts token j+1 of the *same* example; the last position predicts nothing.

    Shifting per example, before packing, guarantees that no position is trained to predict the
    first token of the next example in its row.
    """
    return list(ex.labels[1:]) + [IGNORE_INDEX]


def collate(
    rows: Sequence[Sequence[Example]],
    pad_id: int,
    layout: str = "rows",
    mask: str | None = "bool",
    mask_dtype=None,
):
    """Tensors for one micro-batch.

    Returns a dict with ``input_ids``, ``position_ids`` (reset at each example), ``targets``
    (already shifted; -100 where no loss), ``segment_ids`` (example index within the micro-batch,
    -1 on padding) and, for ``layout="rows"`` with ``mask`` set, ``attention_mask``: the exact
    block-diagonal causal mask, ``"bool"`` (True = may attend; for sdpa) or ``"additive"`` (0 or
    the dtype's minimum; for eager attention). Padding positions form blocks of their own, so no
    query row is fully masked (which would give NaN).
    """
    import torch

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rows = [list(r) for r in rows if len(r)]
    if not rows:  # dummy micro-batch: a rank with nothing to do still joins the collectives
        rows_ids = [[pad_id]]
        rows_pos = [[0]]
        rows_tgt = [[IGNORE_INDEX]]
        rows_seg = [[-1]]
    else:
        rows_ids, rows_pos, rows_tgt, rows_seg = [], [], [], []
        seg = 0
        for row in rows:
            ids, pos, tgt, sg = [], [], [], []
            for ex in row:
                ids.extend(ex.input_ids)
                pos.extend(range(len(ex)))
                tgt.extend(shifted_targets(ex))
                sg.extend([seg] * len(ex))
                seg += 1
            rows_ids.append(ids)
            rows_pos.append(pos)
            rows_tgt.append(tgt)
            rows_seg.append(sg)
    if layout == "flat":
        rows_ids = [sum(rows_ids, [])]
        rows_pos = [sum(rows_pos, [])]
        rows_tgt = [sum(rows_tgt, [])]
        rows_seg = [sum(rows_seg, [])]
    width = max(len(r) for r in rows_ids)
    n = len(rows_ids)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    targets = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.full((n, width), -1, dtype=torch.long)
    for k in range(n):
        m = len(rows_ids[k])
        input_ids[k, :m] = torch.tensor(rows_ids[k])
        targets[k, :m] = torch.tensor(rows_tgt[k])
        segment_ids[k, :m] = torch.tensor(rows_seg[k])
        position_ids[k, :m] = torch.tensor(rows_pos[k])
        position_ids[k, m:] = torch.arange(width - m)
    batch = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "targets": targets,
        "segment_ids": segment_ids,
    }
    if layout == "rows" and mask is not None:
        batch["attention_mask"] = block_causal_mask(segment_ids, mask, mask_dtype)
    return batch


def block_causal_mask(segment_ids, kind: str = "bool", dtype=None):
    """``(rows, 1, L, L)`` mask: query i may see key j iff j <= i and both are in one example."""
    import torch

    n, width = segment_ids.shape
    # Give each padding run its own block id so that padding never joins an example's block.
    block = segment_ids.clone()
    block[block < 0] = -2 - torch.arange(n).unsqueeze(1).expand(n, width)[block < 0]
    same = block.unsqueeze(2) == block.unsqueeze(1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (same & causal).unsqueeze(1)
    if kind == "bool":
        return allowed
    if kind == "additive":
        dtype = dtype or torch.float32
        out = torch.zeros(allowed.shape, dtype=dtype)
        return out.masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"mask kind must be 'bool' or 'additive', got {kind!r}")


def token_losses(logits, targets):
    """Per-position cross-entropy (0 where the target is -100), in float32."""
    import torch.nn.functional as F

    v = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, v).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)


def per_example_losses(logits, targets, segment_ids) -> list[float]:
    """Mean loss of each example (by segment id) of a collated micro-batch."""
    losses = token_losses(logits, targets)
    n_seg = int(segment_ids.max().item()) + 1
    out = []
    for s in range(n_seg):
        sel = (segment_ids == s) & (targets != IGNORE_INDEX)
        out.append(float(losses[sel].sum() / sel.sum().clamp(min=1)))
    return out


def reference_useful_fraction(lengths: Sequence[int], batch_size: int = 4, seed: int = 0) -> float:
    """Stanford Alpaca's collator: random order, ``batch_size`` examples padded to the longest."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    useful = slots = 0
    for s in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[s:s + batch_size]]
        useful += sum(batch)
        slots += len(batch) * max(batch)
    return useful / slots
