"""The README's table of the offline miniature, printed from a finished run's results.

    python -m alpagasus.reporting.miniature_table results/smoke                 # print the section
    python -m alpagasus.reporting.miniature_table results/smoke --readme README.md   # rewrite it there

The README's figures are pasted from this output (between the markers below), never typed, and
tests/test_miniature.py checks that they equal what a fresh run gives.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

from alpagasus.core.io import atomic_open, read_jsonl

START = "<!-- miniature-table:start (python -m alpagasus.reporting.miniature_table results/smoke --readme README.md) -->"
END = "<!-- miniature-table:end -->"

# What each training variant of the miniature is trained on (rules/common.smk variant_data).
TRAINED_ON = {
    "alpagasus": "the {kept:,} records the verifier kept",
    # Not kept is not wrong: the selection drops some right answers and keeps some wrong ones.
    "alpaca": "all {records:,} records ({dropped:,} of them not kept by the selection)",
    "random": "{random:,} random records",
}


def exact_match_of(rows: list[dict]) -> tuple[int, int] | None:
    """(answers equal to the reference, items), or None where the items carry no reference
    (a test set without known answers: only the miniature's has them)."""
    if not rows or any("reference" not in r for r in rows):
        return None
    return sum(r["answer"] == r["reference"] for r in rows), len(rows)


def exact_match(generations: Path) -> tuple[int, int]:
    """(answers equal to the reference, items) of one model's held-out answers."""
    rows = read_jsonl(generations)
    missing = [r.get("id") for r in rows if "reference" not in r]
    if missing:
        raise ValueError(f"{generations}: items {missing[:5]} have no 'reference' (not the miniature's test set?)")
    if not rows:
        raise ValueError(f"{generations}: no answers")
    return exact_match_of(rows)


def read_winrate(path: Path, test_set: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"] == test_set]
    if not rows:
        raise ValueError(f"{path}: no row for test set {test_set!r}")
    return rows


def markdown(results: str | Path, size: str = "tiny", test_set: str = "mini") -> str:
    """The README section: what was kept, then exact match and pairwise results per model."""
    res = Path(results)
    summary = json.loads((res / "selection_summary.json").read_text())
    counts = {"kept": summary["kept"], "records": summary["records"], "random": summary["random_baseline_size"],
              "dropped": summary["records"] - summary["kept"]}
    rows = read_winrate(res / f"winrate_{size}.csv", test_set)
    first = rows[0]["model_a"]
    # The table is model A's against each other model: the configured comparisons come first,
    # those the selectors' overlay generates follow (rules/common.smk all_comparisons) and have
    # their own block (selectors_markdown).
    rows = [r for r in rows if r["model_a"] == first]
    models = [first, *[r["model_b"] for r in rows]]
    against = {r["model_b"]: r for r in rows}

    out = [
        f"| model | trained on | exact match on {test_set} | {first}-{size} vs it: win / tie / lose "
        "| winning score [95% CI] | sign test p | position consistency |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in models:
        hits, n = exact_match(res / "generations" / f"{m}-{size}" / f"{test_set}.jsonl")
        trained_on = TRAINED_ON.get(m, m).format(**counts)
        cells = [f"{m}-{size}", trained_on, f"{hits / n:.3f} ({hits}/{n})"]
        r = against.get(m)
        if r is None:
            cells += ["", "", "", ""]
        else:
            cells += [f"{r['win']} / {r['tie']} / {r['lose']}",
                      f"{float(r['winning_score']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]",
                      r["p_value"], f"{float(r['position_consistency']):.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# The selectors' block (config/selectors_smoke.yaml): a second generated section of the README.
SELECTORS_START = ("<!-- miniature-selectors:start (python -m alpagasus.reporting.miniature_table results/smoke "
                   "--selectors --readme README.md) -->")
SELECTORS_END = "<!-- miniature-selectors:end -->"


def _seeded_generations(res: Path, variant: str, size: str, test_set: str) -> list[Path]:
    """The answers of every seed's model of a variant: ``{variant}-{size}`` and ``{variant}_seed{N}-{size}``."""
    plain = res / "generations" / f"{variant}-{size}" / f"{test_set}.jsonl"
    seeded = sorted((res / "generations").glob(f"{variant}_seed*-{size}/{test_set}.jsonl"))
    return [p for p in [plain, *seeded] if p.exists()]


def _mean_sd(values: list[float]) -> str:
    import statistics

    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def selectors_markdown(results: str | Path, size: str = "tiny", test_set: str = "mini") -> str:
    """The README's selectors section, from ``selectors_{size}.csv`` and the files it was made of:
    per selector the records kept, their precision (the share whose response is the correct
    one: the miniature's ``solve`` knows it), their mean response length, the exact match of its
    models (mean ± sd over seeds) and its winning scores against random at the same k, raw and
    length-controlled, pooled over seeds."""
    from alpagasus.data import load_records
    from alpagasus.data.miniature import solve
    from alpagasus.evaluation.selectors_table import random_variant, read_table

    res = Path(results)
    rows = [r for r in read_table(res / f"selectors_{size}.csv") if r["test_set"] in (test_set, "pooled")]
    if not rows:
        raise ValueError(f"{res}/selectors_{size}.csv: no row for test set {test_set!r}")
    k = int(rows[0]["k"])
    seeds = rows[0]["seeds"]
    over_seeds = "1 seed" if seeds == "1" else f"mean ± sd, {seeds} seeds"
    out = [f"| selector (k = {k:,}) | kept | precision | mean response chars | exact match on {test_set} "
           f"({over_seeds}) | vs random: winning score [95% CI] | length-controlled [95% CI] "
           f"| vs alpaca: winning score [95% CI] |",
           "|---|---|---|---|---|---|---|---|"]

    def ci(r, a, lo, hi):
        return "" if r is None or r[a] == "" else f"{float(r[a]):.3f} [{float(r[lo]):.3f}, {float(r[hi]):.3f}]"

    for sel in dict.fromkeys(r["selector"] for r in rows):
        variant = random_variant(k) if sel == "random" else sel
        kept = load_records(res / "selections" / f"{variant}.json")
        correct = sum(r["output"] == solve(r["instruction"], r["input"]) for r in kept)
        em = []
        for path in _seeded_generations(res, variant, size, test_set):
            hits, n = exact_match(path)
            em.append(hits / n)
        vs = {r["opponent"]: r for r in rows if r["selector"] == sel}
        mean_chars = sum(len(r["output"]) for r in kept) / len(kept) if kept else float("nan")
        cells = [sel, f"{len(kept):,}", f"{correct / len(kept):.3f}" if kept else "", f"{mean_chars:.1f}",
                 _mean_sd(em) if em else "", ci(vs.get("random"), "winning_score", "ci_low", "ci_high"),
                 ci(vs.get("random"), "lc_winning_score", "lc_ci_low", "lc_ci_high"),
                 ci(vs.get("alpaca"), "winning_score", "ci_low", "ci_high")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def replace_section(text: str, section: str, where: str = "README", start: str = START, end: str = END) -> str:
    """``text`` with what lies between the markers replaced by ``section``."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{where}: expected one {start!r} line followed by one {end!r} line")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{section}{end}{tail}"


def committed_section(text: str, where: str = "README", start: str = START, end: str = END) -> str:
    """What lies between the markers (as ``markdown`` prints it)."""
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"{where}: expected one {start!r} line followed by one {end!r} line")
    return text.split(start, 1)[1].split(end, 1)[0].lstrip("\n")


# How far a fresh run on another CPU may move the main table. The tiny models train in float32,
# and CPUs differ in how their kernels (AVX2 or AVX-512 paths of MKL, oneDNN and ATen) round the
# same sums, so after hundreds of steps the greedy answers differ on a few items: measured on two
# hosts, up to 7 of 200 in a count and 0.05 in a winning score. The record counts, the
# structure and the labels do not depend on the CPU and must be equal.
COUNT_TOLERANCE = 15  # items, of the 200 held-out ones
SCORE_TOLERANCE = 0.1  # a rate or a winning score (and its interval's ends)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def table_differences(committed: str, fresh: str) -> list[str]:
    """What differs between two printings of the main table beyond what the host's float
    rounding explains (empty: they agree). Per cell: the text around the numbers is equal;
    counts of items are within COUNT_TOLERANCE and rates and scores within SCORE_TOLERANCE;
    the sign test's p is not compared (a steep function of the win and lose counts, which are);
    everything else (models, record counts, items per set, position consistency) is equal."""
    def cells(table: str) -> list[list[str]]:
        return [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.strip().splitlines()]

    a, b = cells(committed), cells(fresh)
    if len(a) != len(b) or [len(r) for r in a] != [len(r) for r in b]:
        return [f"the tables have different shapes: {[len(r) for r in a]} vs {[len(r) for r in b]} cells"]
    header = a[0]
    out = []
    for row_a, row_b in zip(a[2:], b[2:]):
        for col, (x, y) in enumerate(zip(row_a, row_b)):
            where = f"{row_a[0]}, {header[col]!r}"
            if header[col] == "sign test p":
                continue
            if _NUMBER.sub("#", x) != _NUMBER.sub("#", y):
                out.append(f"{where}: {x!r} vs {y!r}")
                continue
            nums_a, nums_b = _NUMBER.findall(x), _NUMBER.findall(y)
            float_run = header[col].startswith(("exact match", "winning score")) or " vs it: " in header[col]
            for i, (u, v) in enumerate(zip(nums_a, nums_b)):
                fu, fv = float(u.replace(",", "")), float(v.replace(",", ""))
                if not float_run:
                    ok = u == v
                elif "." in u:
                    ok = abs(fu - fv) <= SCORE_TOLERANCE
                elif header[col].startswith("exact match") and i == len(nums_b) - 1:  # "(hits/n)": n items
                    ok = u == v
                else:
                    ok = abs(fu - fv) <= COUNT_TOLERANCE
                if not ok:
                    out.append(f"{where}: {x!r} vs {y!r}")
                    break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alpagasus.reporting.miniature_table", description=__doc__.splitlines()[0])
    ap.add_argument("results", help="the miniature's results directory (results/smoke)")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--test-set", default="mini")
    ap.add_argument("--selectors", action="store_true",
                    help="the selectors' section (a run with config/selectors_smoke.yaml) instead of the main one")
    ap.add_argument("--readme", help="rewrite the section between the markers in this file instead of printing")
    args = ap.parse_args(argv)
    if args.selectors:
        section = selectors_markdown(args.results, args.size, args.test_set)
        markers = {"start": SELECTORS_START, "end": SELECTORS_END}
    else:
        section = markdown(args.results, args.size, args.test_set)
        markers = {"start": START, "end": END}
    if args.readme:
        path = Path(args.readme)
        new = replace_section(path.read_text(encoding="utf-8"), section, str(path), **markers)
        with atomic_open(path) as fh:
            fh.write(new)
    else:
        sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
