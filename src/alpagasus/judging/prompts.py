"""Every judge prompt of the AlpaGasus protocol, verbatim, in one place (the training template,
also verbatim, is alpagasus.data.template).

The strings below are the protocol itself (../shared/PAPER.md): a change of one character
changes what a judge answers, so each family of prompts has a version hash, and every cached
or recorded judgement carries the hash of the prompt that produced it.
"""

from __future__ import annotations

import hashlib
import json

from alpagasus.core.config import defaults

# The dimension a rating asks about when none is named: rating.dimension's default (the paper's).
DIMENSION = defaults("rating")["dimension"]

# --- Rating (data selection), PAPER.md section 1 -------------------------------------------
RATING_SYSTEM = (
    "We would like to request your feedback on the performance of AI assistant in response to "
    "the instruction and the given input displayed following."
)
# Layout of the reference code (gpt4life/alpagasus), which produced the released data.
RATING_USER = (
    "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n\n"
    "Please rate according to the {dimension} of the response to the instruction and the input. "
    "Each assistant receives a score on a scale of 0 to 5, where a higher score indicates higher "
    "level of the {dimension}. Please first output a single line containing value indicating the "
    "scores. In the subsequent line, please provide a comprehensive explanation of your "
    "evaluation, avoiding any potential bias. \n\n"
)
# The helpfulness ablation's user message, as the reference code writes it (rating/
# chatgpt_rating.py of gpt4life/alpagasus): "receives an score", not "a score". Its released
# helpfulness_t45.json was rated with that text, so we keep the typo to reproduce it.
RATING_USER_HELPFULNESS = RATING_USER.replace("receives a score", "receives an score")
RATING_USER_BY_DIMENSION = {"accuracy": RATING_USER, "helpfulness": RATING_USER_HELPFULNESS}
RATING_DIMENSIONS = tuple(RATING_USER_BY_DIMENSION)

# --- Pairwise evaluation, PAPER.md section 3 ------------------------------------------------
PAIRWISE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
PAIRWISE_CRITERIA = (
    "We would like to request your feedback on the performance of two AI assistants in response "
    "to the user question displayed above.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each "
    "assistant receives an overall score on a scale of 1 to 10, where a higher score indicates "
    "better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for "
    "Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent "
    "line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your "
    "judgment."
)
PAIRWISE_USER = (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n"
    "[System]\n{criteria}\n\n"
)

def _version(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


# One version per dimension, so the helpfulness text's own version never changes the key (and
# with it the cached judgements) of an accuracy rating.
RATING_PROMPT_VERSIONS = {d: _version(RATING_SYSTEM, user) for d, user in RATING_USER_BY_DIMENSION.items()}
RATING_PROMPT_VERSION = RATING_PROMPT_VERSIONS["accuracy"]
PAIRWISE_PROMPT_VERSION = _version(PAIRWISE_SYSTEM, PAIRWISE_USER, PAIRWISE_CRITERIA)


def rating_prompt_version(dimension: str = DIMENSION) -> str:
    """The version hash of the rating prompt for one dimension (recorded with each judgement)."""
    _check_dimension(dimension)
    return RATING_PROMPT_VERSIONS[dimension]


def _check_dimension(dimension: str) -> None:
    if dimension not in RATING_DIMENSIONS:
        raise ValueError(f"rating dimension must be one of {RATING_DIMENSIONS}, got {dimension!r}")


def rating_messages(instruction: str, input: str, output: str, dimension: str = DIMENSION) -> list[dict]:
    """Chat messages asking a judge to rate one (instruction, input, output) triple."""
    _check_dimension(dimension)
    user = RATING_USER_BY_DIMENSION[dimension].format(instruction=instruction, input=input, output=output, dimension=dimension)
    return [{"role": "system", "content": RATING_SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(question: str, answer_1: str, answer_2: str) -> list[dict]:
    """Chat messages asking a judge to score two answers to one question (1 = shown first)."""
    user = PAIRWISE_USER.format(
        question=question, answer_1=answer_1, answer_2=answer_2, criteria=PAIRWISE_CRITERIA
    )
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]
