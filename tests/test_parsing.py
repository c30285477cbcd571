"""Reply shapes real judges write, for the rating (0-5) and pairwise (1-10) parsers."""

from __future__ import annotations

import pytest

from alpagasus.parsing import parse_pair, parse_rating

# --------------------------------------------------------------------------- parse_rating

RATING_CASES = [
    ("4.5", 4.5),
    ("4.5\n\nExplanation with 3 numbers 2", 4.5),
    ("Score: 4.5", 4.5),
    ("Score:4.5", 4.5),  # the reference code's bug gives 4
    ("score: 4", 4.0),
    ("4.5/5", 4.5),
    ("4.5 / 5", 4.5),
    ("**4.5**", 4.5),
    ("Score: **4.5**", 4.5),
    ("**Score:** 4", 4.0),
    ("Rating: 4 out of 5", 4.0),
    ("I would rate this response 4.5 out of 5.", 4.5),
    ("Sure! Here is my evaluation.\n4.5\nThe answer has 2 small errors.", 4.5),
    ("Accuracy: 4.5", 4.5),
    ("Accuracy score: 4.5/5", 4.5),
    ("Helpfulness: 3", 3.0),
    ("[4.5]", 4.5),
    ("4.5 - The response is correct.", 4.5),
    ("5.0", 5.0),
    ("5", 5.0),
    ("0", 0.0),
    ("Score: 3.5 (out of 5)", 3.5),
    ("The score is 3.5.", 3.5),
    ("Score: 4.5/5.0", 4.5),
    ("### Rating: 4.5\nThe response is accurate.", 4.5),
    ("  \n\n3.5\n", 3.5),
    ("Score:\n4", 4.0),
    # labelled score after an explanation line that contains other numbers
    ("Explanation: the response lists 3 items and 2 dates.\nScore: 4", 4.0),
    # the first line (a) beats a labelled score in the explanation (b)
    ("4\nA score of 5 would require more detail.", 4.0),
    ("The response is accurate.\nI rate it **4** out of 5.", 4.0),
]


@pytest.mark.parametrize(("text", "expected"), RATING_CASES)
def test_parse_rating_shapes(text: str, expected: float) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "N/A",
        "I cannot evaluate this.",
        "Score: N/A",
        "7",  # outside [0, 5]
        "Score: 45",  # outside [0, 5]
        "8/10",  # another scale
        "Score: -1",
        "1. The response is fluent\n2. It answers the question",  # a list, not a score
        "The response mentions 3 facts and 2 examples.",  # unlabelled numbers
        "Score: N/A\nThe response has 3 errors.",
        "4,5",  # decimal comma or two numbers: ambiguous
        "3 - 4",  # a range
    ],
)
def test_parse_rating_none(text: str) -> None:
    assert parse_rating(text) is None


def test_parse_rating_none_input() -> None:
    assert parse_rating(None) is None  # type: ignore[arg-type]


def test_parse_rating_score_colon_regression() -> None:
    # gpt4life/alpagasus splits on "Score:" and keeps the integer part: "Score:4.5" -> 4.
    assert parse_rating("Score:4.5") == 4.5
    assert parse_rating("Score:4.5\nThe answer is correct.") == 4.5


def test_parse_rating_out_of_range_candidate_does_not_fall_through() -> None:
    # the first-line candidate decides; explanation numbers are not a fallback
    assert parse_rating("7\nI would rate it 4 out of 5.") is None


def test_parse_rating_max_score() -> None:
    assert parse_rating("8", max_score=10) == 8.0
    assert parse_rating("8/10", max_score=10) == 8.0
    assert parse_rating("4.5/5", max_score=10) is None


# --------------------------------------------------------------------------- parse_pair

PAIR_CASES = [
    ("8 7", (8.0, 7.0)),
    ("8, 7", (8.0, 7.0)),
    ("8\t7", (8.0, 7.0)),
    ("8,7", (8.0, 7.0)),
    ("8.5 7", (8.5, 7.0)),
    ("7 8.5", (7.0, 8.5)),
    ("Assistant 1: 8\nAssistant 2: 7", (8.0, 7.0)),
    ("Assistant 1: 8/10, Assistant 2: 7/10", (8.0, 7.0)),
    ("8/10 and 7/10", (8.0, 7.0)),
    ("Scores: 8 7", (8.0, 7.0)),
    ("**8** **7**", (8.0, 7.0)),
    ("[8, 7]", (8.0, 7.0)),
    ("(8, 7)", (8.0, 7.0)),
    ("8 and 7", (8.0, 7.0)),
    ("Score for Assistant 1: 9\nScore for Assistant 2: 6", (9.0, 6.0)),
    ("Here are my scores:\n9 6\nAssistant 1 is better.", (9.0, 6.0)),
    ("9 6\nAssistant 1 gave 3 reasons, Assistant 2 gave 2.", (9.0, 6.0)),
    (
        "Assistant 1 receives a score of 8, and Assistant 2 receives a score of 7.",
        (8.0, 7.0),
    ),
    ("10 10", (10.0, 10.0)),
    ("1 10", (1.0, 10.0)),
    ("Assistant 1's score: 6\nAssistant 2's score: 9", (6.0, 9.0)),
    ("**Assistant 1:** 8\n**Assistant 2:** 7", (8.0, 7.0)),
    ("Assistant 2: 7\nAssistant 1: 8", (8.0, 7.0)),  # labels decide, not order
    ("Assistants 1 and 2 receive scores of 8 and 7 respectively.", (8.0, 7.0)),
    # the first line (a) beats labelled numbers in the explanation (b)
    ("8 7\n\nAssistant 1: 3\nAssistant 2: 4", (8.0, 7.0)),
]


@pytest.mark.parametrize(("text", "expected"), PAIR_CASES)
def test_parse_pair_shapes(text: str, expected: tuple[float, float]) -> None:
    assert parse_pair(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8",
        "8 7 6",
        "8 7 6\nBoth answers are fine.",
        "I cannot compare these.",
        "80 70",
        "8/5 7/5",  # another scale
        "Assistant 1 gave 3 reasons and Assistant 2 gave 4.",  # counts, not scores
        "Assistant 1: 8",  # only one assistant
        "8\n7",
    ],
)
def test_parse_pair_none(text: str) -> None:
    assert parse_pair(text) is None


def test_parse_pair_returns_floats_in_assistant_order() -> None:
    result = parse_pair("3 9")
    assert result == (3.0, 9.0)
    assert all(isinstance(x, float) for x in result)


def test_parse_pair_max_score() -> None:
    assert parse_pair("4 5", max_score=5) == (4.0, 5.0)
    assert parse_pair("8 7", max_score=5) is None
