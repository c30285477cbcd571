"""One self-contained HTML page of a run: what was kept, how training went, who won, and what
every judge stage cost. Images are embedded, so the file can be mailed or archived alone."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from alpagasus.core.io import atomic_open

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
.note{color:#666;font-size:.9em}
"""


def _img(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _json(path) -> dict:
    return json.loads(Path(path).read_text())


def build(*, selection_summary, score_hist, rating_cost, checkpoints: list[str], winrates: list[tuple[str, str, str]],
          judge_costs: list[str], out_path, title: str = "alpagasus run", agreement: list[str] | None = None) -> None:
    """``winrates``: (size, csv path, png path). ``checkpoints``: checkpoint directories.
    ``agreement``: (judge_agreement.json, its figure) where judges were compared."""
    parts = [f"<h1>{html.escape(title)}</h1>"]

    s = _json(selection_summary)
    parts.append("<h2>Data selection</h2>")
    parts.append(f"<p>{s['kept']:,} of {s['records']:,} records kept ({100 * s['kept_fraction']:.2f}%) by "
                 f"{html.escape(json.dumps(s['rule']))}; random baseline of {s['random_baseline_size']:,}; "
                 f"{s['unscored']:,} records without a score.</p>")
    parts.append(_table([{"bin": k, "records": v} for k, v in s["paper_bins"].items()]))
    parts.append(_img(score_hist, "score histogram"))
    used = s.get("score_used")
    if used:
        parts.append(f"<p>Ranked by <code>{html.escape(used['field'])}</code>: {used['distinct_values']:,} distinct "
                     f"values; at the cut ({_fmt(used['cut_value'])}) {used['ties_at_cut']:,} records tie, "
                     f"{used['ties_at_cut_kept']:,} of them kept by the content-hash tie-break; largest tie group "
                     f"{used['largest_tie_group']:,}.</p>")
    if agreement:
        from alpagasus.selection.agreement import summary_rows

        result = _json(agreement[0])
        pairs, releases = summary_rows(result)
        parts.append("<h2>Judge agreement</h2>")
        parts.append(f"<p>Scores compared: <code>{html.escape(result['score_field'])}</code>; kept sets by "
                     f"{html.escape(json.dumps(result['rule']))}, matched by content hash.</p>")
        if pairs:
            parts.append(_table(pairs))
        if releases:
            parts.append(_table(releases))
        parts.append(_img(agreement[1], "judge agreement"))

    parts.append("<h2>Training</h2>")
    rows = []
    for ck in checkpoints:
        tl = Path(ck) / "train_log.json"
        if not tl.exists():
            continue
        log = _json(tl)
        rows.append({"model": Path(ck).name, "examples": log.get("examples") or log.get("n_examples"),
                     "steps": log.get("total_steps"), "final loss": log.get("final_loss"),
                     "useful-token fraction": log.get("useful_token_fraction"),
                     "tokens/s": log.get("tokens_per_s"), "wall s": log.get("wall_time_s"),
                     "devices": log.get("device_count")})
    parts.append(_table(rows))
    for ck in checkpoints:
        png = Path(ck) / "loss_curve.png"
        if png.exists():
            parts.append(f"<h3>{html.escape(Path(ck).name)}</h3>{_img(png, 'loss curve')}")

    parts.append("<h2>Pairwise evaluation</h2>")
    for size, table, png in winrates:
        with open(table, newline="") as fh:
            wr = list(csv.DictReader(fh))
        parts.append(f"<h3>{html.escape(size)}</h3>")
        parts.append(_table(wr))
        parts.append(_img(png, f"win rates {size}"))
    parts.append('<p class="note">Win/Tie/Lose: per item, model A gets +1/0/-1 in each of the two orders; '
                 "sum &gt; 0 win, = 0 tie, &lt; 0 lose. Winning score = (W - L)/n + 1, with a bootstrap 95% "
                 "interval; p is a two-sided sign test of wins vs losses; position consistency is how often "
                 "the two orders agree. Unparsed judgements are excluded from n and counted.</p>")

    parts.append("<h2>Cost of every judge stage</h2>")
    cost_rows = []
    for path in [rating_cost, *judge_costs]:
        c = _json(path)
        stage = "rating" if path == rating_cost else f"{c.get('model_a')} vs {c.get('model_b')} on {c.get('testset')}"
        cost_rows.append({"stage": stage, "judge": c.get("model"),
                          "paid now": c.get("judgements_paid_this_run"), "from cache": c.get("judgements_reused_from_cache"),
                          "requests sent": c.get("requests_sent"), "prompt tokens": c.get("prompt_tokens_this_run"),
                          "completion tokens": c.get("completion_tokens_this_run"), "USD": c.get("usd_this_run"),
                          "estimated USD": (c.get("estimate_before_run") or {}).get("usd_expected")})
    total = {"stage": "total", "USD": sum(r["USD"] or 0 for r in cost_rows)}
    parts.append(_table(cost_rows + [total]))
    parts.append('<p class="note">Costs are of the last run of each stage; the whole history is in '
                 "cache_dir/ledger.jsonl.</p>")

    with atomic_open(out_path) as fh:
        fh.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
