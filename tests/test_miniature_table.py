"""The README's miniature table is printed from a run's files: exact match from the answers,
the pairwise columns from the win-rate table, and rewritten only between its markers."""
import csv
import json

import pytest

from alpagasus.core.io import write_jsonl
from alpagasus.reporting.miniature_table import (END, START, committed_section, exact_match_of, main, markdown,
                                                 replace_section)
from alpagasus.evaluation.winrate import COLUMNS


def _results(tmp_path, answers):
    """A results directory as the miniature leaves it, for 4 held-out items."""
    res = tmp_path / "smoke"
    (res / "generations").mkdir(parents=True)
    (res / "selection_summary.json").write_text(json.dumps({"records": 10, "kept": 7, "random_baseline_size": 7}))
    for model, given in answers.items():
        write_jsonl(res / "generations" / f"{model}-tiny" / "mini.jsonl",
                    [{"id": i, "answer": a, "reference": r} for i, (a, r) in enumerate(zip(given, "abcd"))])
    with open(res / "winrate_tiny.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for b, (win, tie, lose) in {"alpaca": (3, 1, 0), "random": (2, 1, 1)}.items():
            w.writerow({"model_a": "alpagasus", "model_b": b, "test_set": "mini", "n": 4, "win": win, "tie": tie,
                        "lose": lose, "winning_score": (win - lose) / 4 + 1, "ci_low": 1.0, "ci_high": 1.75,
                        "p_value": 0.25, "position_consistency": 0.75, "unparsed": 0, "relative_score": 1.1,
                        "judge": "verifier"})
    return res


def test_table_rows_come_from_the_answers_and_the_winrate_csv(tmp_path):
    res = _results(tmp_path, {"alpagasus": "abcd", "alpaca": "abxx", "random": "xxxd"})
    lines = markdown(res).splitlines()
    assert len(lines) == 5
    assert lines[2] == "| alpagasus-tiny | the 7 records the verifier kept | 1.000 (4/4) |  |  |  |  |"
    # Not kept (10 - 7), not "wrong": the summary says nothing of which records were wrong.
    assert lines[3] == ("| alpaca-tiny | all 10 records (3 of them not kept by the selection) | 0.500 (2/4) | 3 / 1 / 0 "
                        "| 1.750 [1.000, 1.750] | 0.25 | 0.75 |")
    assert lines[4].startswith("| random-tiny | 7 random records | 0.250 (1/4) | 2 / 1 / 1 | 1.250 [")


def test_answers_without_references_are_refused_with_the_file(tmp_path):
    res = _results(tmp_path, {"alpagasus": "abcd", "alpaca": "abcd", "random": "abcd"})
    write_jsonl(res / "generations" / "random-tiny" / "mini.jsonl", [{"id": 0, "answer": "a"}])
    with pytest.raises(ValueError, match=r"random-tiny/mini.jsonl: items \[0\] have no 'reference'"):
        markdown(res)


def test_readme_is_rewritten_only_between_the_markers(tmp_path):
    res = _results(tmp_path, {"alpagasus": "abcd", "alpaca": "abxx", "random": "xxxd"})
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\n| old | table |\n{END}\n\nafter\n")
    assert main([str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert committed_section(text) == markdown(res) and "old" not in text
    with pytest.raises(ValueError, match="README.md: expected one"):
        replace_section("no markers here", "x", "README.md")


def test_exact_match_only_where_every_item_has_a_reference():
    assert exact_match_of([{"answer": "a", "reference": "a"}, {"answer": " b", "reference": "b"}]) == (1, 2)
    assert exact_match_of([{"answer": "a", "reference": "a"}, {"answer": "b"}]) is None
    assert exact_match_of([]) is None
