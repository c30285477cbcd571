"""One self-contained HTML page of a run, read like a paper's results section: where it came
from, what was kept, how training went, who won, and what every judge stage did and cost.
Images are embedded, so the file can be mailed or archived alone. The tables show what a
reader needs there; every column is in the CSV and JSON files the page is built from."""

from __future__ import annotations

import base64
import csv
import html
import json
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

from alpagasus.core.io import atomic_open, read_jsonl

# Judges that run on this machine: nothing is sent over a network, nothing is paid.
LOCAL_BACKENDS = ("verifier", "transformers", "vllm")

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em;max-width:100%}
td,th{border:1px solid #ddd;padding:.25em .45em;text-align:right;vertical-align:top;overflow-wrap:break-word}
th{background:#f4f4f4;font-weight:600}td:first-child,th:first-child,.text{text-align:left}
p.caption{font-size:.92em;color:#444;margin:1em 0 .2em}
figure{margin:.8em 0}figcaption{color:#555;font-size:.9em}img{max-width:100%}
.note{color:#666;font-size:.9em}code{font-size:.92em;overflow-wrap:anywhere}
"""


# --- words for the page ---------------------------------------------------------------------


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else f"{x:,}"


def rule_in_words(rule: dict, field: str | None = None) -> str:
    """The selection rule as a reader says it: "the records with score ≥ 4.5"."""
    field = field or rule.get("score") or "score"
    method = rule.get("method")
    if method == "threshold":
        return f"the records with {field} ≥ {_num(rule['threshold'])}"
    if method == "top_k":
        return f"the {_num(rule['k'])} records with the highest {field}"
    if method == "top_fraction":
        return f"the {100 * rule['fraction']:g}% of records with the highest {field}"
    raise ValueError(f"selection rule {rule!r}: unknown method {method!r} (threshold, top_k, top_fraction)")


def git_commit(where: str | Path | None = None) -> str:
    """The checkout's commit, marked when files differ from it; "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    return commit + (" with uncommitted changes" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance(*, config_files: list[str], seeds: dict[str, int | None], overrides: dict | None = None,
               where: str | Path | None = None, now: datetime | None = None) -> dict:
    """What the page records of where it came from. The date and commit are read when the page
    is written, so they never rerun the report (a Snakemake param would)."""
    return {"commit": git_commit(where), "config_files": list(config_files), "overrides": dict(overrides or {}),
            "seeds": dict(seeds), "written": (now or datetime.now().astimezone()).isoformat(sep=" ", timespec="seconds")}


# --- building blocks ------------------------------------------------------------------------


def _img(path: str | Path, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    img = f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>" if caption else f"<figure>{img}</figure>"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        raise TypeError(f"a table cell must be a number or text, not {type(v).__name__}: {v!r}")
    return str(v)


def _table(rows: list[dict], columns: list[str] | None = None, caption: str | None = None,
           text_columns: tuple[str, ...] = ()) -> str:
    """A table whose cells wrap at words, so it fits the page; ``caption`` goes above it (a
    <caption> would be as narrow as a narrow table)."""
    cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
    if not rows:
        return cap + '<p class="note">(none)</p>'
    columns = columns or list(rows[0])

    def cell(tag, c, v):
        cls = ' class="text"' if c in text_columns else ""
        return f"<{tag}{cls}>{html.escape(_fmt(v))}</{tag}>"

    head = "".join(cell("th", c, c) for c in columns)
    body = "".join("<tr>" + "".join(cell("td", c, r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"{cap}<table><tr>{head}</tr>{body}</table>"


def _usd(v) -> str:
    if v is None:
        return ""
    return f"${v:,.2f}" if v == 0 or v >= 1 else f"${v:.4f}"


def _json(path) -> dict:
    return json.loads(Path(path).read_text())


def _p(text: str) -> str:
    return f"<p>{text}</p>"


# --- sections -------------------------------------------------------------------------------


def _provenance_section(prov: dict) -> list[str]:
    """One row, so that the date has a column of its own (test_slurm masks columns, not rows)."""
    seeds = prov["seeds"]
    files = " → ".join(prov["config_files"]) or "(none)"
    row = {"commit": prov["commit"], "config files, in the order applied": files}
    if prov.get("overrides"):
        row["--config"] = " ".join(f"{k}={json.dumps(v)}" for k, v in prov["overrides"].items())
    # "time" in the header: tests/test_slurm.py masks the date when comparing two runs' pages.
    row["written (local time)"] = prov["written"]
    row["seeds"] = ", ".join(f"{name} {'n/a' if v is None else v}" for name, v in seeds.items())
    return ["<h2>Provenance</h2>",
            _table([row], text_columns=tuple(row)),
            '<p class="note">Later config files override earlier ones. The commit is the checkout\'s when this '
            "page was written.</p>"]


def _selection_section(s: dict, score_hist, judge: str) -> list[str]:
    rule = s["rule"]
    unscored = f"{s['unscored']:,} got no readable score" if s["unscored"] else "every one got a readable score"
    out = ["<h2>Data selection</h2>",
           _p(f"The judge {html.escape(judge)} rated {s['records']:,} records; {unscored}. "
              f"Kept: {html.escape(rule_in_words(rule))}, <b>{s['kept']:,} records</b> "
              f"({100 * s['kept_fraction']:.2f}%). The random baseline draws {s['random_baseline_size']:,} "
              "records, as many as were kept.")]
    out.append(_table([{"score": "records", **s["paper_bins"]}], caption="Records per score, in the paper's bins."))
    out.append(_img(score_hist, "score histogram"))
    used = s.get("score_used")
    if used and used.get("distinct_values") is not None:
        out.append(_p(f"Ranked by <code>{html.escape(used['field'])}</code>: {used['distinct_values']:,} distinct "
                      f"values; at the cut ({_fmt(used['cut_value'])}) {used['ties_at_cut']:,} records tie, "
                      f"{used['ties_at_cut_kept']:,} of them kept by the content-hash tie-break; largest tie group "
                      f"{used['largest_tie_group']:,}."))
    if s.get("verbosity"):
        out.append(_p(html.escape(verbosity_in_words(s["verbosity"]))))
    return out


def verbosity_in_words(v: dict) -> str:
    """The verbosity audit (selection/verbosity.py) as a sentence: length quartiles of the kept
    and of all responses, and the overlap with as many of the longest."""
    def q(d):
        if d["median"] is None:
            return "none"
        return f"{d['q1']:,.0f} / {d['median']:,.0f} / {d['q3']:,.0f} (mean {d['mean']:,.0f})"

    lk = v["longest_k"]
    text = (f"Verbosity: response length ({v['length_unit']}) quartiles 25% / median / 75% of the kept records "
            f"{q(v['kept'])}, of all records {q(v['all'])}.")
    if lk["k"]:
        text += (f" {lk['overlap']:,} of the {lk['k']:,} kept are among the {lk['k']:,} longest responses "
                 f"(share {lk['share']:.3f}, Jaccard {lk['jaccard']:.3f}; a random selection of that size "
                 f"would share about {lk['share_if_random']:.3f}).")
    return text


def _agreement_section(json_path, png) -> list[str]:
    from alpagasus.selection.agreement import summary_rows

    result = _json(json_path)
    pairs, releases = summary_rows(result)
    out = ["<h2>Judge agreement</h2>",
           _p(f"Scores compared: <code>{html.escape(result['score_field'])}</code>. Each judge's kept set is "
              f"{html.escape(rule_in_words(result['rule'], result['score_field']))}; sets are matched by "
              "content hash.")]
    if pairs:
        out.append(_table(pairs))
    if releases:
        out.append(_table(releases))
    out.append(_img(png, "judge agreement"))
    return out


def _training_section(checkpoints: list[str], loss_curves: list[tuple[str, str | Path]]) -> list[str]:
    from alpagasus.reporting.plots import loss_curves as draw_loss_curves

    logs = []
    for ck in checkpoints:
        tl = Path(ck) / "train_log.json"
        if tl.exists():
            logs.append((Path(ck).name, _json(tl)))
    rows = [{"model": name, "examples": log.get("examples") or log.get("n_examples"),
             "steps": log.get("total_steps"), "final loss": log.get("final_loss"),
             "useful-token fraction": log.get("useful_token_fraction"), "tokens/s": log.get("tokens_per_s"),
             "wall s": log.get("wall_time_s"), "devices": log.get("device_count")} for name, log in logs]
    out = ["<h2>Training</h2>", _table(rows)]
    for size, png in loss_curves:
        runs = [log for _, log in logs if log.get("size") == size]
        draw_loss_curves(runs, png, title=f"Training loss of the {size} models")
        names = ", ".join(f"{log.get('variant')}-{size}" for log in runs)
        out.append(_img(png, f"loss curves of {names}",
                        f"Loss on response tokens of every {size} model, one line each ({names}); "
                        "each run's own curve, step by step, is loss_curve.png in its checkpoint."))
    return out


def _exact_match_rows(generations: list[tuple[str, str, str, str | Path]], size: str) -> tuple[list[dict], list[str]]:
    """One row per model of a size, a column per test set whose items carry known answers."""
    from alpagasus.reporting.miniature_table import exact_match_of

    by_model: dict[str, dict] = {}
    test_sets: list[str] = []
    for s, model, test_set, path in generations:
        if s != size:
            continue
        em = exact_match_of(read_jsonl(path))
        if em is None:
            continue
        hits, n = em
        col = f"exact match on {test_set}"
        if col not in test_sets:
            test_sets.append(col)
        by_model.setdefault(model, {"model": f"{model}-{size}"})[col] = f"{hits / n:.3f} ({hits:,}/{n:,})"
    return list(by_model.values()), test_sets


# The win-rate CSV's columns as the page shows them; n, ci and p merged into readable cells,
# the judge named in the sentence above, the relative score and the judge's length bias left to
# the CSV and the sentences below the table.
WINRATE_PAGE_COLUMNS = ["comparison (A vs B)", "test set", "n", "A wins / ties / B wins",
                        "winning score of A [95% CI]", "length-controlled [95% CI]", "mean chars A / B",
                        "sign-test p", "position consistency", "unparsed"]


def _with_ci(r: dict, score: str, low: str, high: str) -> str:
    """"score [low, high]" as the CSV writes them; empty where the CSV has no score (a table
    written before a column existed has none)."""
    return f"{r[score]} [{r[low]}, {r[high]}]" if r.get(score) not in (None, "") else ""


def _winrate_rows(rows: list[dict], size: str) -> list[dict]:
    return [{"comparison (A vs B)": f"{r['model_a']}-{size} vs {r['model_b']}-{size}", "test set": r["test_set"],
             "n": r["n"],
             "A wins / ties / B wins": f"{r['win']} / {r['tie']} / {r['lose']}",
             "winning score of A [95% CI]": _with_ci(r, "winning_score", "ci_low", "ci_high"),
             "length-controlled [95% CI]": _with_ci(r, "lc_winning_score", "lc_ci_low", "lc_ci_high"),
             "mean chars A / B": f"{r['mean_chars_a']} / {r['mean_chars_b']}"
             if r.get("mean_chars_a") not in (None, "") else "",
             "sign-test p": r["p_value"], "position consistency": r["position_consistency"],
             "unparsed": r["unparsed"]} for r in rows]


def _headline_rows(rows: list[dict]) -> list[dict]:
    """A comparison's pooled row where it has several test sets, else its one row."""
    pooled = {(r["model_a"], r["model_b"]) for r in rows if r["test_set"] == "pooled"}
    return [r for r in rows if r["test_set"] == "pooled" or (r["model_a"], r["model_b"]) not in pooled]


def _finding(r: dict, size: str) -> str:
    where = "over all test sets" if r["test_set"] == "pooled" else f"on {r['test_set']}"
    if r["winning_score"] == "":
        return f"{r['model_a']}-{size} against {r['model_b']}-{size} {where}: no item judged."
    text = (f"{r['model_a']}-{size} against {r['model_b']}-{size} {where}: {r['win']} wins, {r['tie']} ties and "
            f"{r['lose']} losses in {r['n']} items; winning score {r['winning_score']} "
            f"[{r['ci_low']}, {r['ci_high']}], sign-test p = {r['p_value']}.")
    if r.get("lc_winning_score") not in (None, ""):
        text += (f" At equal length (length-controlled): {_with_ci(r, 'lc_winning_score', 'lc_ci_low', 'lc_ci_high')}; "
                 f"mean answer length {r['mean_chars_a']} vs {r['mean_chars_b']} characters.")
    if r.get("longer_wins_share") not in (None, ""):
        rho = f", Spearman {r['length_spearman']} of score vs length difference" if r.get("length_spearman") else ""
        text += f" The longer answer won {r['longer_wins_share']} of the decided judgements{rho}."
    return text


def _pairwise_section(winrates, generations) -> list[str]:
    out = ["<h2>Pairwise evaluation</h2>"]
    for size, table, png in winrates:
        with open(table, newline="", encoding="utf-8") as fh:
            wr = list(csv.DictReader(fh))
        out.append(f"<h3>{html.escape(size)}</h3>")
        em_rows, em_cols = _exact_match_rows(generations, size)
        if em_rows:
            out.append(_table(em_rows, ["model", *em_cols],
                              caption="Exact match: held-out answers equal to the known answer."))
        judges = sorted({r["judge"] for r in wr})
        out.append(_table(_winrate_rows(wr, size), WINRATE_PAGE_COLUMNS, text_columns=("test set",),
                          caption=f"Judged by {', '.join(judges) or '(none)'}, both orders of every item; "
                                  f"all columns in {Path(table).name}."))
        out.append(_img(png, f"win rates {size}"))
        out += [_p(html.escape(_finding(r, size))) for r in _headline_rows(wr)]
    out.append('<p class="note">Win/Tie/Lose: per item, model A gets +1/0/-1 in each of the two orders; '
               "sum &gt; 0 win, = 0 tie, &lt; 0 lose. Winning score = (W - L)/n + 1, with a bootstrap 95% "
               "interval; p is a two-sided sign test of wins vs losses; position consistency is how often "
               "the two orders agree. Unparsed judgements are excluded from n and counted. Length-controlled: "
               "the winning score that a logistic model of each item's outcome (a tie as half a win) on the "
               "ratio of the two answers' lengths predicts at equal length, with a bootstrap 95% interval; "
               "where length and quality go together (the longer answer always worse, or always better) it "
               "takes the real difference away too. The longer answer's share of the decided judgements is "
               "0.5 for a judge indifferent to length (docs/evaluation.md, Length control).</p>")
    return out


def _harness_rows(rows: list[dict]) -> list[dict]:
    return [{"selector": r["selector"], "kept": r["kept"], "against": r["opponent"], "test set": r["test_set"],
             "seeds": r["seeds"], "n": r["n"],
             "winning score [95% CI], seeds pooled": _with_ci(r, "winning_score", "ci_low", "ci_high"),
             "over seeds: mean (sd)": (f"{r['seed_mean']} ({r['seed_sd'] or '-'})" if r.get("seed_mean") else ""),
             "length-controlled [95% CI]": _with_ci(r, "lc_winning_score", "lc_ci_low", "lc_ci_high"),
             "kept records' mean response chars": r["kept_mean_response_chars"],
             "mean answer chars (selector / opponent)": f"{r['mean_chars_a']} / {r['mean_chars_b']}"}
            for r in rows]


def _harness_section(harnesses) -> list[str]:
    """``harnesses``: (size, kind, csv, png), kind "selectors" or "data_size" (evaluation/selectors_table.py)."""
    if not harnesses:
        return []
    out = ["<h2>Selectors compared</h2>"]
    for size, kind, table, png in harnesses:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if kind == "selectors":
            k = rows[0]["k"] if rows else "?"
            head = (f"{size}: each selector keeps k = {k} records, is trained with the same recipe and judged "
                    f"in both orders against random at the same k and against the full set.")
        else:
            head = f"{size}: the paper's data-size curve, each selection against the full set."
        out.append(f"<h3>{html.escape(head)}</h3>")
        out.append(_table(_harness_rows(rows), text_columns=("selector", "test set"),
                          caption=f"All columns in {Path(table).name}."))
        out.append(_img(png, f"{kind} {size}"))
    out.append('<p class="note">Every seed (evaluation.seeds) is a training of its own; the winning score pools '
               "their items, the mean and sd are over each seed's own winning score. A selector trained with a "
               "seed is judged against random trained with the same seed, and against the full set trained "
               "with the training seed (docs/evaluation.md, Selectors compared).</p>")
    return out


def _benchmarks_section(benchmarks) -> list[str]:
    """``benchmarks``: (size, csv, png) of the lm-eval benchmarks (evaluation/benchmarks.py)."""
    if not benchmarks:
        return []
    out = ["<h2>Benchmarks</h2>"]
    for size, table, png in benchmarks:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        tasks = [c for c in (rows[0] if rows else {}) if c != "model" and not c.endswith("_stderr")]
        shown = [{"model": r["model"], **{t: (f"{100 * float(r[t]):.1f}"
                                              + (f" ± {100 * float(r[t + '_stderr']):.1f}" if r.get(t + "_stderr") else ""))
                                          for t in tasks}} for r in rows]
        out.append(f"<h3>{html.escape(size)}</h3>")
        out.append(_table(shown, ["model", *tasks], text_columns=("model",),
                          caption=f"Score in % ± standard error (lm-evaluation-harness). All columns in {Path(table).name}."))
        out.append(_img(png, f"benchmarks {size}"))
    out.append('<p class="note">Each checkpoint evaluated by lm-evaluation-harness with the tasks, shots and '
               "metrics of evaluation.benchmarks; lm-eval's full results (task versions, harness version) are "
               "in benchmarks/{variant}-{size}.json (docs/evaluation.md, Benchmarks).</p>")
    return out


COST_COLUMNS = ["stage", "judge", "judgements needed", "repeats (judged once)", "from cache", "judged now",
                "not judged", "HTTP requests", "tokens in / out", "USD", "estimated USD"]


def cost_row(stage: str, c: dict, backend: str | None) -> dict:
    """One judge stage's ledger as numbers that add up: judgements needed = repeats + from cache
    + judged now + not judged. A local judge sends nothing and pays nothing."""
    est = c.get("estimate_before_run") or {}
    pending = est.get("requests", 0)  # distinct prompts not in the cache when the run began
    repeats = est.get("duplicates_in_input", 0)
    cached = c.get("judgements_reused_from_cache", 0)
    others = c.get("judgements_from_other_processes", 0)  # paid by another process meanwhile
    not_judged = c.get("unscored_failed", 0) + c.get("unscored_budget", 0)
    local = backend in LOCAL_BACKENDS
    where = "local" if local else "API" if backend else "?"
    return {"stage": stage, "judge": f"{c.get('judge') or '?'} ({c.get('model')}, {where})",
            "judgements needed": repeats + cached + pending, "repeats (judged once)": repeats,
            "from cache": cached + others, "judged now": pending - others - not_judged, "not judged": not_judged,
            "HTTP requests": "none" if local else c.get("requests_sent"),
            "tokens in / out": "none" if local and not c.get("prompt_tokens_this_run")
            else f"{c.get('prompt_tokens_this_run', 0):,} / {c.get('completion_tokens_this_run', 0):,}",
            "USD": c.get("usd_this_run") or 0.0,
            "estimated USD": est.get("usd_expected"), "_local": local, "_judge": c.get("judge")}


def _money(row: dict) -> dict:
    return {**row, "USD": _usd(row["USD"]), "estimated USD": _usd(row["estimated USD"])}


def _cost_section(rating_cost, judge_costs, judge_backends: dict[str, str]) -> list[str]:
    rows = []
    for path in [rating_cost, *judge_costs]:
        c = _json(path)
        if path == rating_cost:
            stage = f"rating {c['records']:,} records" if "records" in c else "rating"
        else:
            stage = f"{c.get('model_a')} vs {c.get('model_b')} on {c.get('testset')}"
        rows.append(cost_row(stage, c, judge_backends.get(c.get("judge"))))
    total = {"stage": "total", **{k: sum(r[k] for r in rows) for k in
                                  ("judgements needed", "repeats (judged once)", "from cache", "judged now",
                                   "not judged", "USD")}}
    sent = [r["HTTP requests"] for r in rows if not r["_local"]]
    total["HTTP requests"] = sum(x or 0 for x in sent) if sent else "none"
    estimates = [r["estimated USD"] for r in rows]
    total["estimated USD"] = sum(estimates) if None not in estimates else None
    out = ["<h2>Cost of every judge stage</h2>",
           _table([_money(r) for r in [*rows, total]], COST_COLUMNS, text_columns=("stage", "judge"))]
    notes = ["Judgements needed = repeats + from cache + judged now + not judged: a repeat (a prompt that "
             "occurs twice, e.g. two records alike) takes the first one's judgement; \"not judged\" are "
             "failures or requests over the budget. HTTP requests count retries."]
    local = {r["_judge"]: judge_backends[r["_judge"]] for r in rows if r["_local"]}
    if local:
        notes.append(f"Judged on this machine by {', '.join(sorted(local))}: nothing sent, nothing paid"
                     + ("; the verifier caches nothing (it is instant), so it judges again on every run."
                        if "verifier" in local.values() else "."))
    notes.append("Costs are of the last run of each stage; the whole history is in cache_dir/ledger.jsonl.")
    out.append('<p class="note">' + " ".join(html.escape(n) for n in notes) + "</p>")
    return out


def build(*, selection_summary, score_hist, rating_cost, checkpoints: list[str], winrates: list[tuple[str, str, str]],
          judge_costs: list[str], out_path, title: str = "alpagasus run", agreement: list[str] | None = None,
          provenance: dict | None = None, loss_curves: list[tuple[str, str]] | None = None,
          generations: list[tuple[str, str, str, str]] = (), judge_backends: dict[str, str] | None = None,
          harnesses: list[tuple[str, str, str, str]] = (), benchmarks: list[tuple[str, str, str]] = ()) -> None:
    """``winrates``: (size, csv path, png path). ``checkpoints``: checkpoint directories.
    ``agreement``: (judge_agreement.json, its figure) where judges were compared.
    ``provenance``: as ``provenance()`` returns it. ``loss_curves``: (size, png to write) per size;
    without them the figures go to a temporary directory (the page embeds them anyway).
    ``generations``: (size, model, test set, answers .jsonl), for exact match where answers are known.
    ``judge_backends``: judge name -> backend, to say which stages ran locally.
    ``harnesses``: (size, "selectors" | "data_size", csv, png) of the selectors compared.
    ``benchmarks``: (size, csv, png) of the lm-eval benchmarks."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if provenance:
        parts += _provenance_section(provenance)
    rating = _json(rating_cost)
    parts += _selection_section(_json(selection_summary), score_hist,
                                f"{rating.get('judge') or '?'} ({rating.get('model') or '?'})")
    if agreement:
        parts += _agreement_section(*agreement)
    with tempfile.TemporaryDirectory() as tmp:
        if loss_curves is None:
            sizes = dict.fromkeys(s for s, _, _ in winrates)
            loss_curves = [(s, Path(tmp) / f"loss_curves_{s}.png") for s in sizes]
        parts += _training_section(checkpoints, loss_curves)
    parts += _pairwise_section(winrates, generations)
    parts += _harness_section(harnesses)
    parts += _benchmarks_section(benchmarks)
    parts += _cost_section(rating_cost, judge_costs, judge_backends or {})

    with atomic_open(out_path) as fh:
        fh.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
