"""Pairwise evaluation: two models' answers on a test set, judged in both orders.

For each item the judge sees A's answer first (order 1) and B's first (order 2), with the
paper's prompt. Requests go through the same engine as rating: cache (keyed by judge, prompt
version, sampling, question and both answers in their order), limits, retries, budget, ledger.
A reply whose two scores cannot be read is kept raw and counted as unparsed, never a tie.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alpagasus.core.config import filled
from alpagasus.core.identity import judgement_keyer
from alpagasus.judging.cache import JudgementCache, cached_keys, write_ledger, write_results
from alpagasus.judging.engine import run_judgements
from alpagasus.core.io import check_writable, read_jsonl, write_json
from alpagasus.judging import structured
from alpagasus.judging.judges import JudgeRequest, make_judge
from alpagasus.judging.parsing import parse_pair
from alpagasus.judging.prompts import PAIRWISE_PROMPT_VERSION, pairwise_messages

log = logging.getLogger(__name__)


class IncompleteJudgingError(RuntimeError):
    """Some items have no judgement yet; everything paid for is cached, so a rerun completes."""


def load_answers(path: str | Path, test_items: list[dict] | None = None) -> dict[str, dict]:
    """Answers by item id from a generations file, or a reference file (id, answer) whose
    questions come from the test set."""
    rows = read_jsonl(path)
    by_q = {str(it["id"]): it for it in test_items or []}
    out: dict[str, dict] = {}
    for n, row in enumerate(rows):
        for field in ("id", "answer"):
            if field not in row:
                raise ValueError(f"{path}: line {n + 1}: missing field {field!r}")
        if not isinstance(row["answer"], str):
            raise ValueError(f"{path}: line {n + 1}: field 'answer' must be a string")
        key = str(row["id"])
        if key in out:
            raise ValueError(f"{path}: line {n + 1}: id {key!r} appears twice")
        item = by_q.get(key, {})
        out[key] = {**item, **row, "question": row.get("question") or item.get("question")}
        if not out[key]["question"]:
            raise ValueError(f"{path}: line {n + 1}: no question for id {key!r} (not in the file nor the test set)")
    return out


def build_requests(answers_a: dict, answers_b: dict, judge, source: str = "") -> tuple[list[str], list[tuple[JudgeRequest, JudgeRequest]]]:
    if set(answers_a) != set(answers_b):
        only_a, only_b = sorted(set(answers_a) - set(answers_b)), sorted(set(answers_b) - set(answers_a))
        raise ValueError(f"{source}: the two answer files cover different items "
                         f"(only in A: {only_a[:5]}, only in B: {only_b[:5]})")
    params, fmt = structured.request_params(judge, "pairwise")
    ids = list(answers_a)
    key_of = judgement_keyer(judge.model, PAIRWISE_PROMPT_VERSION, params)
    pairs = []
    for i in ids:
        a, b = answers_a[i], answers_b[i]
        q = a["question"]
        ctx = {k: a[k] for k in ("instruction", "input", "reference") if k in a}
        reqs = []
        for first, second in ((a["answer"], b["answer"]), (b["answer"], a["answer"])):
            msgs = pairwise_messages(q, first, second)
            key = key_of(msgs)
            reqs.append(JudgeRequest(key, msgs, {**ctx, "question": q, "answer_1": first, "answer_2": second},
                                     response_format=fmt))
        pairs.append(tuple(reqs))
    return ids, pairs


def judge_pair(answers_a_path, answers_b_path, test_set_path, judges_cfg: dict, eval_cfg: dict,
               cache_dir, out_path, ledger_path, *, model_a: str, model_b: str, testset: str,
               progress: bool = True) -> dict:
    """Judge A vs B on one test set in both orders; write per-item judgements and a ledger."""
    eval_cfg = filled("evaluation", eval_cfg)
    judge_name = eval_cfg["judge"]
    judge_cfg = filled("judges.*", judges_cfg[judge_name])
    judge = make_judge(judge_name, judge_cfg)
    items = read_jsonl(test_set_path) if test_set_path else []
    answers_a = load_answers(answers_a_path, items)
    answers_b = load_answers(answers_b_path, items)
    ids, pairs = build_requests(answers_a, answers_b, judge, f"{answers_a_path} vs {answers_b_path}")
    check_writable(cache_dir, Path(out_path).parent, Path(ledger_path).parent)
    cache = JudgementCache.in_dir(cache_dir) if judge.cacheable else None
    try:
        outcome = run_judgements(
            [r for pair in pairs for r in pair], judge, judge_cfg, PAIRWISE_PROMPT_VERSION, cache,
            max_usd=eval_cfg["max_usd"], stage=f"pairwise:{out_path}", expected_output_tokens=eval_cfg["expected_output_tokens"],
            desc=f"judging {model_a} vs {model_b} on {testset}", progress=progress)
    finally:
        if cache is not None:
            cache.close()

    rows, missing, unparsed = [], 0, 0
    for i, (r1, r2) in zip(ids, pairs):
        row = {"id": i, "question": answers_a[i]["question"], "answer_a": answers_a[i]["answer"],
               "answer_b": answers_b[i]["answer"]}
        for name, req in (("order1", r1), ("order2", r2)):
            entry = outcome.entries.get(req.key)
            if entry is None:
                row[name] = {"raw": None, "scores": None, "error": str(outcome.errors.get(req.key, "no reply"))}
                missing += 1
            else:
                scores = parse_pair(entry["text"])
                unparsed += scores is None
                row[name] = {"raw": entry["text"], "scores": list(scores) if scores else None,
                             "usage": {"prompt_tokens": entry.get("prompt_tokens", 0),
                                       "completion_tokens": entry.get("completion_tokens", 0)}}
        rows.append(row)

    ledger = {"stage": "pairwise", "judge": judge_name, "model": judge.model, "model_a": model_a,
              "model_b": model_b, "testset": testset, "items": len(ids), "prompt_version": PAIRWISE_PROMPT_VERSION,
              "judgements_unparsed": unparsed, "judgements_missing": missing, **outcome.ledger()}
    unwritten = write_ledger(ledger_path, cache_dir, ledger)
    if outcome.fatal:
        raise IncompleteJudgingError(f"judging stopped: {outcome.fatal} ({outcome.budget_text()}){unwritten}")
    if unwritten:
        raise IncompleteJudgingError(f"judging done, every reply cached{unwritten}; a rerun writes it without "
                                     f"sending anything")
    if missing and not eval_cfg["allow_incomplete"]:
        raise IncompleteJudgingError(
            f"{missing} of {2 * len(ids)} judgements of {model_a} vs {model_b} on {testset} are missing "
            f"({outcome.failure_summary() or outcome.budget_text()}); {outcome.budget_text()}; "
            f"every reply received is cached, so rerunning sends only those")
    write_results(out_path, rows, ledger_path, IncompleteJudgingError)
    return ledger


def order_scores(row: dict) -> tuple:
    """(order1, order2) in the convention of stats.item_outcome: order1 = (A, B) as written with
    A first, order2 = (B, A) as written with B first; None where a judgement is unparsed."""
    o1, o2 = row["order1"]["scores"], row["order2"]["scores"]
    return (tuple(o1) if o1 else None, tuple(o2) if o2 else None)


def estimate_judging(comparisons: list[dict], judges_cfg: dict, eval_cfg: dict, cache_dir, out_path) -> dict:
    """What judging every comparison would cost now (cached judgements excluded), before any
    request: ``comparisons`` are dicts with a, b (answer files), test_set (its file), name."""
    from alpagasus.judging import cost

    eval_cfg = filled("evaluation", eval_cfg)
    judge_name = eval_cfg["judge"]
    judge_cfg = filled("judges.*", judges_cfg[judge_name])
    judge = make_judge(judge_name, judge_cfg)
    requests: dict[str, JudgeRequest] = {}
    per_job = []
    for c in comparisons:
        items = read_jsonl(c["test_set"])
        _, pairs = build_requests(load_answers(c["a"], items), load_answers(c["b"], items), judge, c["name"])
        reqs = [r for pair in pairs for r in pair]
        requests.update((r.key, r) for r in reqs)
        per_job.append((c["name"], reqs))
    cached = cached_keys(cache_dir, requests) if judge.cacheable else set()
    expected = eval_cfg["expected_output_tokens"]
    est = cost.estimate(judge_cfg, [r.messages for k, r in requests.items() if k not in cached], expected)
    est.update(judge=judge_name, model=judge.model, cached=len(cached),
               budget_usd_per_job=eval_cfg["max_usd"],
               jobs={name: cost.estimate(judge_cfg, [r.messages for r in reqs if r.key not in cached], expected)
                     for name, reqs in per_job})
    if judge_cfg.get("backend") in ("openai", "openai_batch"):
        est["usd_by_backend"] = cost.online_and_batch(
            judge_cfg, [r.messages for k, r in requests.items() if k not in cached], expected)
    log.info("judging estimate: %d requests, expected $%.2f, at most $%.2f", est["requests"],
             est["usd_expected"], est["usd_at_most"])
    write_json(out_path, est)
    return est
