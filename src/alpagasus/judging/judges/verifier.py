"""The offline miniature's judge: checks answers against the task's known solution.

It answers in the same text format as an LLM judge ("4.5\\n<why>" for a rating, "9 3\\n<why>"
for a pair), so the same parsers, cache-free engine, tables and reports run on its replies.
"""

from __future__ import annotations

from alpagasus.core.config import filled
from alpagasus.data import miniature
from alpagasus.judging.judges.base import JudgeReply, JudgeRequest


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def closeness(answer: str, reference: str) -> float:
    """1 for an exact match, falling towards 0 with the normalised edit distance."""
    answer, reference = answer.strip(), reference.strip()
    if answer == reference:
        return 1.0
    return 1.0 - edit_distance(answer, reference) / max(len(answer), len(reference), 1)


def rating_score(answer: str, reference: str) -> float:
    """5 for an exact answer, else 4 x closeness: only exact answers pass a 4.5 threshold."""
    c = closeness(answer, reference)
    return 5.0 if c == 1.0 else round(4.0 * c, 1)


def pair_score(answer: str, reference: str) -> int:
    """1..10: 10 for an exact answer, else 1 + 8 x closeness, rounded."""
    c = closeness(answer, reference)
    return 10 if c == 1.0 else 1 + round(8 * c)


# The saturated verifier (saturate: true) writes "4.5" for any answer this close to the truth.
SATURATED_EDIT_DISTANCE = 2
# The probability it gives "5" as the first digit of an exact answer; a near miss gets this
# times closeness**SHARPNESS, so its written "4.5" carries the exact quality underneath.
SATURATED_P5 = 0.45
SHARPNESS = 8


def saturated_rating(answer: str, reference: str) -> tuple[str, list[dict]]:
    """What a modern judge does: "4.5" for everything near the truth (never "5"), below that the
    usual 4 x closeness; and the token log-probabilities (OpenAI shape, "4", ".", "5") whose
    expected score still ranks exact answers above near misses. Far answers are written as
    sure as the plain verifier's."""
    import math

    c = closeness(answer, reference)
    if edit_distance(answer.strip(), reference.strip()) > SATURATED_EDIT_DISTANCE:
        text = f"{rating_score(answer, reference):g}"
        return text, [{"token": ch, "logprob": 0.0, "top_logprobs": [{"token": ch, "logprob": 0.0}]} for ch in text]
    p5 = SATURATED_P5 * c ** SHARPNESS
    first = [{"token": "4", "logprob": math.log(1 - p5)}] + ([{"token": "5", "logprob": math.log(p5)}] if p5 > 0 else [])
    return "4.5", [{"token": "4", "logprob": math.log(1 - p5), "top_logprobs": first},
                   {"token": ".", "logprob": 0.0, "top_logprobs": [{"token": ".", "logprob": 0.0}]},
                   {"token": "5", "logprob": 0.0, "top_logprobs": [{"token": "5", "logprob": 0.0}]}]


class VerifierJudge:
    cacheable = False  # free and instant: caching would only grow a file
    concurrency = 64

    def __init__(self, name: str, cfg: dict | None = None):
        self.name = name
        self.saturate = bool(filled("verifier_judge", cfg)["saturate"])
        self.model = "verifier-v1-saturated" if self.saturate else "verifier-v1"
        self.params: dict = {"saturate": True} if self.saturate else {}
        self.attempts = 0
        self.failures: dict[str, int] = {}

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        pass

    def _reference(self, ctx: dict) -> str | None:
        if ctx.get("reference") is not None:
            return ctx["reference"]
        return miniature.solve(ctx.get("instruction", ""), ctx.get("input", ""))

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        self.attempts += 1
        ctx = request.context
        ref = self._reference(ctx)
        if ref is None:
            text = "I cannot verify this task: it is not one of the miniature's task families."
        elif "answer_1" in ctx:
            s1, s2 = pair_score(ctx["answer_1"], ref), pair_score(ctx["answer_2"], ref)
            text = f"{s1} {s2}\nEach answer is scored by its distance to the known answer."
        elif self.saturate:
            score_text, logprobs = saturated_rating(ctx.get("output", ""), ref)
            return JudgeReply(text=f"{score_text}\nThe response is judged against the known answer.",
                              model=self.model, logprobs=logprobs)
        else:
            score = rating_score(ctx.get("output", ""), ref)
            why = "matches" if score == 5.0 else "differs from"
            text = f"{score:g}\nThe response {why} the known answer."
        return JudgeReply(text=text, model=self.model)
