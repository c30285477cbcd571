"""Rate every record of an instruction set with a judge: records -> scores.jsonl + cost ledger.

Status of each record in scores.jsonl:
- ``scored``: the judge answered and a score was read from the reply;
- ``unparsed``: the judge answered (it is paid for and cached) but no score could be read;
  the raw reply is kept, the record is counted and reported, never scored 0;
- ``failed``: no reply (retries ran out, or the server refused the request); retried next run;
- ``budget``: not sent because the spend would have passed ``max_usd``; sent next run.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from alpagasus.core.config import defaults, filled
from alpagasus.data import content_hash
from alpagasus.core.identity import judgement_keyer
from alpagasus.judging.cache import CACHE_FILE, JudgementCache, write_ledger, write_results
from alpagasus.judging.engine import Outcome, run_judgements
from alpagasus.judging.expected_score import expected_score
from alpagasus.core.io import check_writable, write_json
from alpagasus.judging import structured
from alpagasus.judging.judges import Failure, FailureKind, JudgeRequest, make_judge
from alpagasus.judging.parsing import parse_rating
from alpagasus.judging.directed import JUDGE_DIRECTED_FLAG, judge_directed
from alpagasus.judging.prompts import DEFAULT_RATING_PROMPT, rating_messages, rating_prompt_version
from alpagasus.judging.duplicates import FirstSeen
from alpagasus.judging.sharding import summed

log = logging.getLogger(__name__)
MAX_FIELD_CHARS = defaults("data")["max_field_chars"]  # config/schema.yaml
TRUNCATION_NOTE = "\n[... truncated ...]"


# A reply's score, read once a distinct text (parse_rating is a pure function of the text and
# its regular expressions are most of a cached rerun's time; judges repeat their replies).
_score_of = functools.lru_cache(maxsize=1 << 16)(parse_rating)


class IncompleteRatingError(RuntimeError):
    """Some records have no score yet; everything paid for is cached, so a rerun completes."""


def _clip(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + TRUNCATION_NOTE, True


def build_requests(records: list[dict], judge, dimension: str, max_field_chars: int,
                   prompt: str = DEFAULT_RATING_PROMPT) -> tuple[list[JudgeRequest], list[list[str]]]:
    """One request per record, with over-long fields clipped; returns requests and per-record flags."""
    requests, flags, directed = _build(records, judge, dimension, max_field_chars, prompt)
    _log_directed(directed, len(directed), len(records))
    return requests, flags


def _build(records, judge, dimension: str, max_field_chars: int, prompt: str = DEFAULT_RATING_PROMPT,
           first: int = 0) -> tuple[list[JudgeRequest], list[list[str]], list[tuple]]:
    """build_requests for records ``first``, ``first + 1``, ... (how warnings name them); also
    the (record, field, phrase) of each record whose text speaks to the judge."""
    requests, flags = [], []
    version = rating_prompt_version(dimension, prompt)
    directed = []
    params, fmt = structured.request_params(judge, "rating")
    key_of = judgement_keyer(judge.model, version, params)
    for i, rec in enumerate(records, first):
        fields, rec_flags = {}, []
        for name in ("instruction", "input", "output"):
            fields[name], clipped = _clip(rec[name], max_field_chars)
            if clipped:
                rec_flags.append(f"truncated_{name}")
                log.warning("record %d: field %r has %d characters; truncated to %d for the judge",
                            i, name, len(rec[name]), max_field_chars)
        for name in ("instruction", "input", "output"):  # a loop, not next(genexpr): 10M times
            if phrase := judge_directed(fields[name]):
                rec_flags.append(JUDGE_DIRECTED_FLAG)
                directed.append((i, name, phrase))
                break
        messages = rating_messages(fields["instruction"], fields["input"], fields["output"], dimension, prompt)
        key = key_of(messages)
        requests.append(JudgeRequest(key=key, messages=messages, context=fields, response_format=fmt))
        flags.append(rec_flags)
    return requests, flags, directed


def _log_directed(directed: list[tuple], n_directed: int, n_records: int) -> None:
    if directed:
        # One line, not one per record: a large set may hold thousands of honest matches.
        i, name, phrase = directed[0]
        log.warning("%d of %d records carry text that speaks to the judge (flag %s in scores.jsonl; "
                    "selection.exclude_flagged: true drops them), e.g. record %d, field %r: %r",
                    n_directed, n_records, JUDGE_DIRECTED_FLAG, i, name, phrase)


def _expected_fields(entry: dict | None) -> dict:
    """expected_score, score_probs and score_outside_mass of one reply (expected_score.py);
    null where the reply has no readable score or its server sent no log-probabilities."""
    found = expected_score(entry.get("logprobs")) if entry is not None else None
    if found is None:
        return {"expected_score": None, "score_probs": None, "score_outside_mass": None}
    return {"expected_score": found.expected, "score_probs": found.probs, "score_outside_mass": found.outside_mass}


# Records rated a window at a time: requests, replies and rows of one window in memory, never
# the whole set's (a request's prompt is ~1-2 KB: 10M records held ~15 GB). A set no larger than
# one window is one call of the engine, as it always was.
RATING_WINDOW = 100_000


def rate_records(
    records: Iterable[dict],
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
    n_records: int | None = None,
    window: int = RATING_WINDOW,
) -> dict:
    """Rate ``records``; write scores and ledger atomically. Returns the ledger.

    ``records``: a list, or any iterable with ``n_records`` saying how many (rule rate streams
    them from the records file: alpagasus.data.stream). They are judged ``window`` at a time,
    each window one call of the engine (the cache, the budget and the claims are the run's:
    a record repeated in a later window is a cache hit, paid once), and their rows go to
    scores.jsonl's temporary file as they come; it is renamed into place after the ledger, as
    before. A shard of a larger set (judging/sharding.py) passes the global index of its first
    record (``first_index``) and ``shard_fields``: each row then also holds its request key and
    its record's content hash, which the gather checks and drops.

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
    n = len(records) if n_records is None else n_records
    prompt_version = rating_prompt_version(dimension, prompt)
    windowed = n > window

    check_writable(cache_dir, Path(scores_path).parent, Path(ledger_path).parent)
    by_logprobs = judge_cfg.get("score_mode") == "logprobs"
    counts = {"scored": 0, "unparsed": 0, "failed": 0, "budget": 0}
    sink = _Spool(scores_path) if windowed else []
    first_seen = FirstSeen()
    outcomes = []
    directed, n_directed, done = [], 0, 0
    cache = None
    try:
        for chunk in _windows(records, window):
            requests, flags, found = _build(chunk, judge, dimension, max_field_chars, prompt, first=done)
            directed, n_directed = directed or found[:1], n_directed + len(found)
            if not windowed:
                _log_directed(directed, n_directed, n)
            if cache is None and judge.cacheable:
                cache = JudgementCache.in_dir(cache_dir)
            outcome = run_judgements(
                requests, judge, judge_cfg, prompt_version, cache,
                max_usd=rating_cfg["max_usd"], stage=f"rating:{scores_path}",
                expected_output_tokens=rating_cfg["expected_output_tokens"],
                desc=f"rating ({judge_name})", progress=progress,
            )
            earlier = first_seen.resolve([r.key for r in requests], first_index + done)
            for i, (req, rec_flags) in enumerate(zip(requests, flags)):
                entry = outcome.entries.get(req.key)
                row = {"index": first_index + done + i, "score": None, "status": None, "raw": None,
                       "judge": judge_name, "judge_model": judge.model, "prompt_version": prompt_version,
                       "dimension": dimension, "usage": None, "flags": list(rec_flags)}
                if earlier[i] is not None:
                    row["flags"].append(f"duplicate_of_{earlier[i]}")
                if entry is not None:
                    score = _score_of(entry["text"])
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
                    row.update(key=req.key, record_hash=content_hash(chunk[i]))
                sink.append(row)
            done += len(chunk)
            outcome.entries = {}  # the window's replies are in its rows now
            outcomes.append(outcome)
            if outcome.fatal:
                break  # what is left was never sent: counted as failed below
    except BaseException:
        if windowed:
            sink.discard()
        raise
    finally:
        if cache is not None:
            cache.close()
    if done < n:
        counts["failed"] += n - done
    if windowed:
        _log_directed(directed, n_directed, n)
    outcome = outcomes[0] if len(outcomes) == 1 else _merged(outcomes)

    try:
        ledger = {"judge": judge_name, "model": judge.model, "dimension": dimension,
                  "prompt_version": prompt_version, "records": n,
                  "status_counts": counts, **outcome.ledger()}
        unwritten = write_ledger(ledger_path, cache_dir, ledger, stage="rating")
        if counts["unparsed"]:
            log.warning("%d replies had no readable score; kept raw with status 'unparsed'", counts["unparsed"])
        if outcome.fatal:
            raise IncompleteRatingError(_stopped_message(outcome, counts, n) + unwritten)
        if unwritten:
            raise IncompleteRatingError(f"rating done, every reply cached{unwritten}; a rerun writes it "
                                        f"without sending anything")
        missing = counts["failed"] + counts["budget"]
        if missing and not rating_cfg["allow_incomplete"]:
            raise IncompleteRatingError(_missing_message(outcome, counts, n))
        if missing:
            if counts["scored"] == 0:
                raise IncompleteRatingError(
                    "no record has a score (allow_incomplete does not select from nothing): "
                    + _missing_message(outcome, counts, n))
            log.warning("INCOMPLETE RATING (rating.allow_incomplete: true): %d of %d records have no score "
                        "(%d failed, %d over budget) and will not be selected; %s", missing, n,
                        counts["failed"], counts["budget"], outcome.failure_summary() or outcome.budget_text())
        if windowed:
            sink.commit(ledger_path)
        else:
            write_results(scores_path, sink, ledger_path, IncompleteRatingError)
    finally:
        if windowed:
            sink.discard()
    return ledger


def _windows(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """``records`` ``size`` at a time (at least one window, empty for no records)."""
    it = iter(records)
    chunk = list(itertools.islice(it, size))
    yield chunk
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _merged(outcomes: list[Outcome]) -> Outcome:
    """The run's outcome from its windows': counts added; what the judge object counts over
    the whole run (attempts, failures by kind, waits) from the last window; the spend before
    this run from the first (a later window's includes the earlier windows')."""
    first, last = outcomes[0], outcomes[-1]
    out = Outcome(max_usd=first.max_usd, usd_before=first.usd_before)
    for o in outcomes:
        out.errors.update(o.errors)
        for name in ("paid_now", "reused", "from_other_processes", "prompt_tokens_now", "completion_tokens_now",
                     "usd_now", "without_usage", "lost_replies", "seconds"):
            setattr(out, name, getattr(out, name) + getattr(o, name))
        out.fatal = out.fatal or o.fatal
    for name in ("attempts", "failures_by_kind", "failure_examples", "long_waits", "rate_limit_pauses"):
        setattr(out, name, getattr(last, name))
    out.estimate = summed([o.estimate for o in outcomes])
    return out


class _Spool:
    """scores.jsonl's temporary file, written a window of rows at a time (each row as
    write_jsonl writes it) and renamed into place by ``commit``, after the ledger. A write that
    fails (a full disk) stops the spooling; ``commit`` then raises write_results' error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.spool.tmp")
        self.error: OSError | None = None
        try:
            self.fh = open(self.tmp, "w", encoding="utf-8")
        except OSError as exc:
            self.fh, self.error = None, exc

    def append(self, row: dict) -> None:
        if self.fh is None:
            return
        try:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.error = exc
            self.discard()

    def commit(self, ledger_path) -> None:
        if self.fh is not None:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
                self.fh.close()
                self.fh = None
                os.replace(self.tmp, self.path)
                return
            except OSError as exc:
                self.error = exc
                self.discard()

        def failed():
            raise self.error
            yield  # a generator: write_results words the error as for any write

        write_results(self.path, failed(), ledger_path, IncompleteRatingError)

    def discard(self) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
        self.tmp.unlink(missing_ok=True)


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


def estimate_rating(records: Iterable[dict], judges_cfg: dict, rating_cfg: dict, cache_dir: str | Path,
                    out_path: str | Path, *, max_field_chars: int = MAX_FIELD_CHARS, n_records: int | None = None,
                    window: int = RATING_WINDOW) -> dict:
    """Requests, tokens and dollars the rating would spend now (cached judgements excluded).

    A window of records at a time, as rate_records judges them (``records`` a list, or an
    iterable and ``n_records``): what is held is one window's requests, and the prompts' token
    counts are added up, so the estimate is the one a single pass over all of them makes."""
    from alpagasus.judging import cost

    rating_cfg = filled("rating", rating_cfg)
    judge_name = rating_cfg["judge"]
    judge_cfg = filled("judges.*", judges_cfg[judge_name])
    judge = make_judge(judge_name, judge_cfg)
    n = len(records) if n_records is None else n_records
    cache_file = Path(cache_dir) / CACHE_FILE
    cache = JudgementCache(cache_file) if judge.cacheable and cache_file.exists() else None
    first_seen = FirstSeen()
    directed, n_directed = [], 0
    distinct = cached = pending = 0
    counts: list[cost.PromptTokens] = []  # a window's pending prompts, added up
    done = 0
    try:
        for chunk in _windows(records, window):
            requests, _, found = _build(chunk, judge, rating_cfg["dimension"], max_field_chars,
                                        rating_cfg["prompt"], first=done)
            directed, n_directed = directed or found[:1], n_directed + len(found)
            earlier = first_seen.resolve([r.key for r in requests], done)
            new = {}
            for req, was in zip(requests, earlier):
                if was is None:
                    new[req.key] = req
            distinct += len(new)
            hits = {k for k in new if k in cache} if cache is not None else set()
            cached += len(hits)
            window_counts = [cost.prompt_tokens(judge.model, r.messages) for k, r in new.items() if k not in hits]
            pending += len(window_counts)
            counts.append(cost.PromptTokens(sum(c.expected for c in window_counts),
                                            sum(c.at_most for c in window_counts)))
            done += len(chunk)
    finally:
        if cache is not None:
            cache.close()
    _log_directed(directed, n_directed, n)
    sized = range(pending)  # estimate reads only the count of the requests whose tokens it is given
    est = cost.estimate(judge_cfg, sized, rating_cfg["expected_output_tokens"], counts=counts)
    est.update(judge=judge_name, model=judge.model, records=n, cached=cached,
               duplicates_in_input=n - distinct, budget_usd=rating_cfg["max_usd"])
    if judge_cfg.get("backend") in ("openai", "openai_batch"):
        # The same requests online and through the Batch API, whichever this judge uses.
        est["usd_by_backend"] = cost.online_and_batch(judge_cfg, sized, rating_cfg["expected_output_tokens"],
                                                      counts=counts)
    log.info("rating estimate: %s", est)
    write_json(out_path, est)
    return est
