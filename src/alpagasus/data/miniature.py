"""The offline miniature: a seeded synthetic instruction set whose answers can be checked.

Each task family has one fixed instruction and a programmatic solution, so a record's quality
is known exactly: the ``verifier`` judge scores a response against ``solve(instruction, input)``.
A configurable fraction of responses is corrupted (wrong, irrelevant, truncated, empty), which
is the noise that AlpaGasus's filtering is meant to remove. Families were chosen so that a tiny
model learns them on 2 CPU cores in minutes (../shared/MINIATURE_NOTES.md).
"""

from __future__ import annotations

import random
import string
from typing import Callable

# The short template the miniature trains and generates with (Alpaca's preamble would double
# sequence length, and compute is the bottleneck on 2 cores).
MINIATURE_TEMPLATE = "{instruction}\nIn: {input}\nOut: "


def _next_number(x: str) -> str:
    return str(int(x) + 1)


FAMILIES: dict[str, tuple[str, Callable[[str], str]]] = {
    "copy": ("Repeat the word exactly.", lambda x: x),
    "reverse": ("Write the word backwards.", lambda x: x[::-1]),
    "uppercase": ("Write the word in capital letters.", lambda x: x.upper()),
    "next_number": ("Give the number that comes next.", _next_number),
    "first_letter": ("Give the first letter of the word.", lambda x: x[:1]),
    "sort3": ("Sort the letters alphabetically.", lambda x: "".join(sorted(x))),
}
_BY_INSTRUCTION = {instr: (name, fn) for name, (instr, fn) in FAMILIES.items()}

CORRUPTIONS = ("other_word", "other_family", "empty", "truncated", "one_char")


def _random_word(rng: random.Random, lo: int = 3, hi: int = 6) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _random_input(family: str, rng: random.Random) -> str:
    if family == "next_number":
        return str(rng.randint(0, 998))
    if family == "sort3":
        return "".join(rng.sample(string.ascii_lowercase, 3))
    return _random_word(rng)


def family_of(instruction: str) -> str | None:
    entry = _BY_INSTRUCTION.get(instruction.strip())
    return entry[0] if entry else None


def solve(instruction: str, input: str) -> str | None:
    """The correct answer, or None when the instruction is not one of the miniature's tasks."""
    entry = _BY_INSTRUCTION.get(instruction.strip())
    if entry is None:
        return None
    try:
        return entry[1](input.strip())
    except ValueError:
        return None


def _corrupt(kind: str, family: str, inp: str, answer: str, rng: random.Random) -> str:
    if kind == "other_word":
        return _random_word(rng)
    if kind == "other_family":
        others = [f for f in FAMILIES if f != family]
        rng.shuffle(others)
        for other in others:
            try:
                alt = FAMILIES[other][1](inp)
            except ValueError:  # next_number on a word
                continue
            if alt != answer:
                return alt
        return _random_word(rng)
    if kind == "empty":
        return ""
    if kind == "truncated":
        return answer[: len(answer) // 2]
    if kind == "one_char":
        if not answer:
            return "x"
        i = rng.randrange(len(answer))
        pool = string.digits if answer[i].isdigit() else string.ascii_lowercase
        choices = [c for c in pool if c != answer[i].lower()]
        return answer[:i] + rng.choice(choices) + answer[i + 1 :]
    raise ValueError(f"unknown corruption {kind!r}")


def make_records(
    n: int,
    corrupt_fraction: float,
    seed: int = 0,
    families: list[str] | None = None,
) -> list[dict]:
    """``n`` Alpaca-format records; about ``corrupt_fraction`` of them have a bad response.

    Corruptions are drawn evenly from CORRUPTIONS. A few "corruptions" are accidentally correct
    (e.g. a one-character change of a one-letter answer cannot happen, but truncating "a" can
    leave ""), which is realistic: the judge, not the generator, decides what is good.
    """
    if not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1], got {corrupt_fraction}")
    names = list(families or FAMILIES)
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown miniature families {unknown}; known: {sorted(FAMILIES)}")
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        family = rng.choice(names)
        instruction, fn = FAMILIES[family]
        inp = _random_input(family, rng)
        answer = fn(inp)
        if rng.random() < corrupt_fraction:
            answer = _corrupt(rng.choice(CORRUPTIONS), family, inp, answer, rng)
        records.append({"instruction": instruction, "input": inp, "output": answer})
    return records


def make_test_items(n: int, seed: int = 1, families: list[str] | None = None, exclude: list[dict] | None = None) -> list[dict]:
    """``n`` clean held-out items (id, instruction, input, reference), none seen in ``exclude``."""
    names = list(families or FAMILIES)
    rng = random.Random(seed)
    seen = {(r["instruction"], r["input"]) for r in (exclude or [])}
    items: list[dict] = []
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 100 * n:
            raise ValueError(f"could not draw {n} held-out items distinct from the training data")
        family = rng.choice(names)
        instruction, fn = FAMILIES[family]
        inp = _random_input(family, rng)
        if (instruction, inp) in seen:
            continue
        seen.add((instruction, inp))
        items.append(
            {"id": f"mini-{len(items)}", "family": family, "instruction": instruction,
             "input": inp, "reference": fn(inp)}
        )
    return items


def question_of(item: dict) -> str:
    """The question as a pairwise judge sees it (the Self-Instruct convention of PAPER.md)."""
    return f"{item['instruction']} Input: {item['input']}" if item.get("input") else item["instruction"]
