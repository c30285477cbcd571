"""Rate every record of an instruction set with a judge: records -> scores.jsonl + cost ledger.

Status of each record in scores.jsonl:
- ``scored``: the judge answered and a score was read from the reply;
- ``unparsed``: the judge answered (it is paid for and cached) but no score could be read;
  the raw reply is kept, the record is counted and reported, never scored 0;
- ``failed``: no reply (retries ran out, or the server refused the request); retried next run;
- ``budget``: not sent because the spend would have passed ``max_usd``; sent next run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alpagasus.core.config import defaults, filled
from alpagasus.data import content_hash
from alpagasus.judging.cache import JudgementCache, cached_keys, judgement_key, write_ledger, write_results
from alpagasus.judging.engine import run_judgements
from alpagasus.judging.expected_score import expected_score
from alpagasus.core.io import check_writable, write_json
from alpagasus.judging import structured
from alpagasus.judging.judges import Failure, FailureKind, JudgeRequest, make_judge
from alpagasus.judging.parsing import parse_rating
from alpagasus.judging.directed import JUDGE_DIRECTED_FLAG, judge_directed
from alpagasus.judging.prompts import DEFAULT_RATING_PROMPT, rating_messages, rating_prompt_version

log = logging.getLogger(__name__)
MAX_FIELD_CHARS = defaults("data")["max_field_chars"]  # config/schema.yaml
TRUNCATION_NOTE = "\n[... truncated ...]"


class IncompleteRatingError(RuntimeError):
    """Some records have no score yet; everything paid for is cached, so a rerun completes."""


def _clip(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + TRUNCATION_NOTE, True


def build_requests(records: list[dict], judge, dimension: str, max_field_chars: int,
                   prompt: str = DEFAULT_RATING_PROMPT) -> tuple[list[JudgeRequest], list[list[str]]]:
    """One request per record, with over-long fields clipped; returns requests and per-record flags."""
    requests, flags = [], []
    version = rating_prompt_version(dimension, prompt)
    directed = []
    params, fmt = structured.request_params(judge, "rating")
    for i, rec in enumerate(records):
        fields, rec_flags = {}, []
        for name in ("instruction", "input", "output"):
            fields[name], clipped = _clip(rec[name], max_field_chars)
            if clipped:
                rec_flags.append(f"truncated_{name}")
                log.warning("record %d: field %r has %d characters; truncated to %d for the judge",
                            i, name, len(rec[name]), max_field_chars)
        found = next(((name, phrase) for name in ("instruction", "input", "output")
                      if (phrase := judge_directed(fields[name]))), None)
        if found:
            rec_flags.append(JUDGE_DIRECTED_FLAG)
            directed.append((i, *found))
        messages = rating_messages(fields["instruction"], fields["input"], fields["output"], dimension, prompt)
        key = judgement_key(judge.model, version, params, messages)
        requests.append(JudgeRequest(key=key, messages=messages, context=fields, response_format=fmt))
        flags.append(rec_flags)
    if directed:
        # One line, not one per record: a large set may hold thousands of honest matches.
        i, name, phrase = directed[0]
        log.warning("%d of %d records carry text that speaks to the judge (flag %s in scores.jsonl; "
                    "selection.exclude_flagged: true drops them), e.g. record %d, field %r: %r",
                    len(directed), len(records), JUDGE_DIRECTED_FLAG, i, name, phrase)
    return requests, flags


def _expected_fields(entry: dict | None) -> dict:
    """expected_score, score_probs and score_outside_mass of one reply (expected_score.py);
    null where the reply has no readable score or its server sent no log-probabilities."""
    found = expected_score(entry.get("logprobs")) if entry is not None else None
    if found is None:
        return {"expected_score": None, "score_probs": None, "score_outside_mass": None}
    return {"expected_score": found.expected, "score_probs": found.probs, "score_outside_mass": found.outside_mass}


def rate_records(
    records: list[dict],
    judges_cfg: dict,
    rating_cfg: dict,
    cache_dir: str | Path,
    scores_path: str | Path,
    ledger_path: str | Path,
    *,
    max_field_chars: int = MAX_FIELD_CHARS,
    progress: bool = True,
    first_index: int = 0,
    shard_fields: bool = False,
) -> dict:
    """Rate ``records``; write scores and ledger atomically. Returns the ledger.

    A shard of a larger set (judging/sharding.py) passes the global index of its first record
    (``first_index``) and ``shard_fields``: each row then also holds its request key and its
    record's content hash, which the gather checks and drops.

    Raises IncompleteRatingError (after writing the ledger and caching every reply) when some
    records are left without a reply and ``allow_incomplete`` is false, so that the pipeline
    does not select from a partial rating.
    """
    judge_name = rating_cfg["judge"]
    if judge_name not in judges_cfg:
        raise KeyError(f"config rating.judge: no judge named {judge_name!r} under judges ({', '.join(judges_cfg)})")
    rating_cfg = filled("rating", rating_cfg)
    judge_cfg = filled("judges.*", judges_cfg[judge_name])
    judge = make_judge(judge_name, judge_cfg)
    dimension, prompt = rating_cfg["dimension"], rating_cfg["prompt"]
    requests, flags = build_requests(records, judge, dimension, max_field_chars, prompt)
    prompt_version = rating_prompt_version(dimension, prompt)

    check_writable(cache_dir, Path(scores_path).parent, Path(ledger_path).parent)
    cache = JudgementCache.in_dir(cache_dir) if judge.cacheable else None
    try:
        outcome = run_judgements(
            requests, judge, judge_cfg, prompt_version, cache,
            max_usd=rating_cfg["max_usd"], stage=f"rating:{scores_path}",
            expected_output_tokens=rating_cfg["expected_output_tokens"],
            desc=f"rating ({judge_name})", progress=progress,
        )
    finally:
        if cache is not None:
            cache.close()

    by_logprobs = judge_cfg.get("score_mode") == "logprobs"
    rows, counts = [], {"scored": 0, "unparsed": 0, "failed": 0, "budget": 0}
    first_seen: dict[str, int] = {}
    for i, (req, rec_flags) in enumerate(zip(requests, flags)):
        entry = outcome.entries.get(req.key)
        row = {"index": first_index + i, "score": None, "status": None, "raw": None, "judge": judge_name,
               "judge_model": judge.model, "prompt_version": prompt_version,
               "dimension": dimension, "usage": None, "flags": list(rec_flags)}
        if req.key in first_seen:
            row["flags"].append(f"duplicate_of_{first_seen[req.key]}")
        else:
            first_seen[req.key] = first_index + i
        if entry is not None:
            score = parse_rating(entry["text"])
            row.update(score=score, status="scored" if score is not None else "unparsed", raw=entry["text"],
                       judge_model=entry.get("model") or judge.model,
                       usage={"prompt_tokens": entry.get("prompt_tokens", 0),
                              "completion_tokens": entry.get("completion_tokens", 0)})
        else:
            err = outcome.errors.get(req.key, Failure(FailureKind.STOPPED, "no reply"))
            row["status"] = "budget" if err.kind is FailureKind.BUDGET else "failed"
            row["error"] = str(err)
        if by_logprobs:
            row.update(_expected_fields(entry if row["status"] == "scored" else None))
        counts[row["status"]] += 1
        if shard_fields:
            row.update(key=req.key, record_hash=content_hash(records[i]))
        rows.append(row)

    ledger = {"judge": judge_name, "model": judge.model, "dimension": dimension,
              "prompt_version": prompt_version, "records": len(records),
              "status_counts": counts, **outcome.ledger()}
    unwritten = write_ledger(ledger_path, cache_dir, ledger, stage="rating")
    if counts["unparsed"]:
        log.warning("%d replies had no readable score; kept raw with status 'unparsed'", counts["unparsed"])
    if outcome.fatal:
        raise IncompleteRatingError(_stopped_message(outcome, counts, len(records)) + unwritten)
    if unwritten:
        raise IncompleteRatingError(f"rating done, every reply cached{unwritten}; a rerun writes it "
                                    f"without sending anything")
    missing = counts["failed"] + counts["budget"]
    if missing and not rating_cfg["allow_incomplete"]:
        raise IncompleteRatingError(_missing_message(outcome, counts, len(records)))
    if missing:
        if counts["scored"] == 0:
            raise IncompleteRatingError(
                "no record has a score (allow_incomplete does not select from nothing): "
                + _missing_message(outcome, counts, len(records)))
        log.warning("INCOMPLETE RATING (rating.allow_incomplete: true): %d of %d records have no score "
                    "(%d failed, %d over budget) and will not be selected; %s", missing, len(records),
                    counts["failed"], counts["budget"], outcome.failure_summary() or outcome.budget_text())
    write_results(scores_path, rows, ledger_path, IncompleteRatingError)
    return ledger


def _stopped_message(outcome, counts: dict, n: int) -> str:
    kept = "all cached"
    if outcome.lost_replies:
        kept += (f"; {outcome.lost_replies} more paid repl{'y' if outcome.lost_replies == 1 else 'ies'} "
                 f"could not be written (replies_lost_unwritable_cache in the ledger)")
    return (f"rating stopped: {outcome.fatal} ({counts['scored'] + counts['unparsed']} of {n} records "
            f"have a reply, {kept}; {outcome.budget_text()})")


def _missing_message(outcome, counts: dict, n: int) -> str:
    why = []
    if counts["failed"]:
        why.append(f"{counts['failed']} failed ({outcome.failure_summary() or 'no reply'})")
    if counts["budget"]:
        why.append(f"{counts['budget']} over budget, not sent ({outcome.budget_text()}; "
                   f"raise rating.max_usd to go on)")
    return (f"{counts['failed'] + counts['budget']} of {n} records have no score yet: {'; '.join(why)}. "
            f"Every reply received is cached: a rerun sends only the missing ones "
            f"(or set rating.allow_incomplete: true to select without them)")


def estimate_rating(records: list[dict], judges_cfg: dict, rating_cfg: dict, cache_dir: str | Path,
                    out_path: str | Path, *, max_field_chars: int = MAX_FIELD_CHARS) -> dict:
    """Requests, tokens and dollars the rating would spend now (cached judgements excluded)."""
    from alpagasus.judging import cost

    rating_cfg = filled("rating", rating_cfg)
    judge_name = rating_cfg["judge"]
    judge_cfg = filled("judges.*", judges_cfg[judge_name])
    judge = make_judge(judge_name, judge_cfg)
    requests, _ = build_requests(records, judge, rating_cfg["dimension"], max_field_chars, rating_cfg["prompt"])
    cached = cached_keys(cache_dir, {r.key for r in requests}) if judge.cacheable else set()
    unique = {r.key: r for r in requests if r.key not in cached}
    est = cost.estimate(judge_cfg, [r.messages for r in unique.values()], rating_cfg["expected_output_tokens"])
    est.update(judge=judge_name, model=judge.model, records=len(records), cached=len({r.key for r in requests} & cached),
               duplicates_in_input=len(requests) - len({r.key for r in requests}), budget_usd=rating_cfg["max_usd"])
    if judge_cfg.get("backend") in ("openai", "openai_batch"):
        # The same requests online and through the Batch API, whichever this judge uses.
        est["usd_by_backend"] = cost.online_and_batch(judge_cfg, [r.messages for r in unique.values()],
                                                      rating_cfg["expected_output_tokens"])
    log.info("rating estimate: %s", est)
    write_json(out_path, est)
    return est
