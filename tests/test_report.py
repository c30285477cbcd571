"""The report page, built from a run's real files (rated by the verifier, selected, answers
judged pairwise, win-rate tables) and read back as HTML: its sections, the rule in words,
the columns of each table, one overlaid loss figure per size, and numbers that add up."""
import csv
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from alpagasus.core.io import write_jsonl
from alpagasus.data import load_records, record_key, write_records
from alpagasus.data.miniature import make_records, make_test_items, question_of
from alpagasus.evaluation.pairwise import judge_pair
from alpagasus.evaluation.winrate import score_label, write_table, write_winrate
from alpagasus.judging.rating import rate_records
from alpagasus.reporting.plots import loss_figure
from alpagasus.reporting.report import build, git_commit, provenance, rule_in_words
from alpagasus.selection.select import write_random, write_selection, write_summary

VARIANTS = ("alpagasus", "alpaca", "random")
N_ITEMS = 30
# How many held-out answers each variant gets wrong (every k-th one): known exact match.
WRONG_EVERY = {"alpagasus": 0, "alpaca": 3, "random": 2}


class Page(HTMLParser):
    """Sections (h2) with their text, tables (caption, header, rows) and images, in order."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: list[dict] = []
        self._cell = self._table = self._caption = None
        self._pending_caption = ""
        self._in_h2 = False
        self.feed(text)

    @property
    def current(self):
        return self.sections[-1] if self.sections else {"title": "", "text": "", "tables": [], "images": []}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.sections.append({"title": "", "text": "", "tables": [], "images": []})
            self._in_h2 = True
        elif tag == "table":
            self._table = {"caption": self._pending_caption, "rows": []}
            self._pending_caption = ""
        elif tag == "p" and a.get("class") == "caption":
            self._caption = ""
        elif tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.current["images"].append(a)

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag == "table":
            t = self._table
            self.current["tables"].append({"caption": t["caption"], "header": t["rows"][0], "rows": t["rows"][1:]})
            self._table = None
        elif tag == "p" and self._caption is not None:
            self._pending_caption, self._caption = self._caption, None
        elif tag in ("td", "th"):
            self._table["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._in_h2:
            self.current["title"] += data
        elif self._caption is not None:
            self._caption += data
        elif self._cell is not None:
            self._cell += data
        elif self.sections:
            self.current["text"] += data

    def section(self, title):
        (s,) = [s for s in self.sections if s["title"] == title]
        return s


def _train_log(variant, size, n_steps, offset):
    # Decreasing, distinct per variant, with a wobble the smoothing must average away.
    return {"variant": variant, "size": size, "examples": 100 + n_steps, "total_steps": n_steps,
            "final_loss": None, "useful_token_fraction": 0.9, "tokens_per_s": 1234.5, "wall_time_s": 12.3,
            "device_count": 1,
            "steps": [{"step": s + 1, "loss": 3.0 / (1 + s / 20) + offset + (0.3 if s % 2 else -0.3)}
                      for s in range(n_steps)]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A miniature run's files for the report, made by the library's own stages (the verifier
    judges; training is stood in by its logs, which is all the report reads of it)."""
    res = tmp_path_factory.mktemp("res")
    judges = {"verifier": {"backend": "verifier"}}
    records = make_records(300, 0.3, seed=3)
    records += records[:7]  # repeats: one judgement each, counted apart
    write_records(res / "alpaca_52k.json", records)
    rate_records(records, judges, {"judge": "verifier"}, res / "cache", res / "scores.jsonl", res / "rating_cost.json",
                 progress=False)
    rule = {"method": "threshold", "threshold": 4.5}
    write_selection(res / "alpaca_52k.json", res / "scores.jsonl", rule, res / "filtered_9k.json")
    write_random(res / "alpaca_52k.json", res / "filtered_9k.json", 42, res / "random_9k.json")
    write_summary(res / "alpaca_52k.json", res / "scores.jsonl", rule, res / "random_9k.json",
                  res / "selection_summary.json", res / "score_hist.png")

    items = [{**it, "question": question_of(it)} for it in make_test_items(N_ITEMS, seed=5)]
    write_jsonl(res / "mini.jsonl", items)
    generations = []
    for v in VARIANTS:
        k = WRONG_EVERY[v]
        path = res / "generations" / f"{v}-tiny" / "mini.jsonl"
        write_jsonl(path, [{"id": it["id"], "question": it["question"], "reference": it["reference"],
                            "answer": it["reference"] + ("x" if k and n % k == 0 else "")}
                           for n, it in enumerate(items)])
        generations.append(("tiny", v, "mini", path))
        ck = res / "checkpoints" / f"{v}-tiny"
        ck.mkdir(parents=True)
        (ck / "train_log.json").write_text(json.dumps(_train_log(v, "tiny", 200, VARIANTS.index(v) * 0.1)))
    judgements, costs = [], []
    for b in ("alpaca", "random"):
        out = res / "judgements" / "tiny" / f"alpagasus-vs-{b}" / "mini.jsonl"
        out.parent.mkdir(parents=True)
        judge_pair(res / "generations/alpagasus-tiny/mini.jsonl", res / f"generations/{b}-tiny/mini.jsonl",
                   res / "mini.jsonl", judges, {"judge": "verifier"}, res / "cache", out,
                   out.with_suffix(".cost.json"), model_a="alpagasus", model_b=b, testset="mini", progress=False)
        judgements.append({"model_a": "alpagasus", "model_b": b, "test_set": "mini", "path": out})
        costs.append(out.with_suffix(".cost.json"))
    write_winrate(judgements, "verifier", res / "winrate_tiny.csv", res / "winrate_tiny.png", title="tiny",
                  bootstrap_samples=200)
    prov = provenance(config_files=["config/config.yaml", "config/smoke.yaml"],
                      seeds={"data": 0, "random baseline": 42, "training": 42, "bootstrap": 0},
                      where=res, now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    build(selection_summary=res / "selection_summary.json", score_hist=res / "score_hist.png",
          rating_cost=res / "rating_cost.json", checkpoints=[str(res / "checkpoints" / f"{v}-tiny") for v in VARIANTS],
          winrates=[("tiny", res / "winrate_tiny.csv", res / "winrate_tiny.png")], judge_costs=costs,
          out_path=res / "report.html", loss_curves=[("tiny", res / "loss_curves_tiny.png")],
          generations=generations, judge_backends={"verifier": "verifier"}, provenance=prov)
    return res, (res / "report.html").read_text()


def test_the_page_has_its_sections_in_order_and_no_raw_json(run):
    _, text = run
    page = Page(text)
    assert [s["title"] for s in page.sections] == [
        "Provenance", "Data selection", "Training", "Pairwise evaluation", "Cost of every judge stage"]
    words = "".join(s["text"] + " ".join(c for t in s["tables"] for row in t["rows"] for c in row)
                    for s in page.sections)
    for raw in ("{", "}", '"method"', "null", "None"):
        assert raw not in words, raw


def test_the_rule_is_said_in_words_with_the_counts(run):
    res, text = run
    summary = json.loads((res / "selection_summary.json").read_text())
    sel = Page(text).section("Data selection")
    assert (f"Kept: the records with score ≥ 4.5, {summary['kept']:,} records "
            f"({100 * summary['kept'] / summary['records']:.2f}%)") in sel["text"]
    assert f"The judge verifier (verifier-v1) rated {summary['records']:,} records; every one got a readable score" in sel["text"]
    (bins,) = sel["tables"]
    assert bins["header"] == ["score", "<3", "3", "3.5", "4", "4.5", "5"]
    (row,) = bins["rows"]
    assert row[0] == "records" and sum(int(c.replace(",", "")) for c in row[1:]) == summary["records"] - summary["unscored"]
    assert row[-1] == f"{summary['kept']:,}"  # the verifier's 5 is an exact answer: the kept ones
    v, lk = summary["verbosity"], summary["verbosity"]["longest_k"]
    assert lk["k"] == summary["kept"]
    assert (f"Verbosity: response length (characters of output) quartiles 25% / median / 75% of the kept records "
            f"{v['kept']['q1']:,.0f} / {v['kept']['median']:,.0f} / {v['kept']['q3']:,.0f} (mean "
            f"{v['kept']['mean']:,.0f}), of all records {v['all']['q1']:,.0f} / {v['all']['median']:,.0f} / "
            f"{v['all']['q3']:,.0f} (mean {v['all']['mean']:,.0f}). {lk['overlap']:,} of the {lk['k']:,} kept are "
            f"among the {lk['k']:,} longest responses (share {lk['share']:.3f}, Jaccard {lk['jaccard']:.3f}; a "
            f"random selection of that size would share about {lk['share_if_random']:.3f}).") in sel["text"]


@pytest.mark.parametrize("rule, field, words", [
    ({"method": "threshold", "threshold": 4.5, "k": None, "fraction": None, "score": "score"}, None,
     "the records with score ≥ 4.5"),
    ({"method": "top_k", "threshold": None, "k": 2804, "score": "expected_score"}, None,
     "the 2,804 records with the highest expected_score"),
    ({"method": "top_fraction", "fraction": 0.05}, "expected_score",
     "the 5% of records with the highest expected_score"),
])
def test_rule_in_words(rule, field, words):
    assert rule_in_words(rule, field) == words


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown method 'best'"):
        rule_in_words({"method": "best"})


def test_training_shows_one_overlaid_loss_figure_with_a_line_per_variant(run, tmp_path):
    res, text = run
    train = Page(text).section("Training")
    assert [img["alt"] for img in train["images"]] == ["loss curves of alpagasus-tiny, alpaca-tiny, random-tiny"]
    assert train["images"][0]["src"].startswith("data:image/png;base64,")
    assert (res / "loss_curves_tiny.png").stat().st_size > 10_000
    (table,) = train["tables"]
    assert table["header"] == ["model", "examples", "steps", "final loss", "useful-token fraction", "tokens/s",
                               "wall s", "devices"]
    assert [r[0] for r in table["rows"]] == [f"{v}-tiny" for v in VARIANTS]

    logs = [json.loads((res / "checkpoints" / f"{v}-tiny" / "train_log.json").read_text()) for v in VARIANTS]
    fig = loss_figure(logs, "t")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == list(VARIANTS)
    for ln, log in zip(lines, logs):
        losses = [h["loss"] for h in log["steps"]]
        assert list(ln.get_xdata()) == [h["step"] for h in log["steps"]]
        # The trailing mean over 200 // 50 = 4 steps: the +-0.3 wobble cancels.
        assert ln.get_ydata()[-1] == pytest.approx(sum(losses[-4:]) / 4)
        assert abs(ln.get_ydata()[-1] - ln.get_ydata()[-2]) < 0.05


def test_pairwise_tables_fit_the_page_and_show_exact_match(run):
    res, text = run
    pw = Page(text).section("Pairwise evaluation")
    em, wr = pw["tables"]
    assert em["header"] == ["model", "exact match on mini"]
    # Every k-th answer wrong, the first one included: ceil(N / k) misses.
    expected = {v: N_ITEMS - (-(-N_ITEMS // k) if k else 0) for v, k in WRONG_EVERY.items()}
    assert em["rows"] == [[f"{v}-tiny", f"{expected[v] / N_ITEMS:.3f} ({expected[v]}/{N_ITEMS})"] for v in VARIANTS]
    assert wr["header"] == ["comparison (A vs B)", "test set", "n", "A wins / ties / B wins",
                            "winning score of A [95% CI]", "length-controlled [95% CI]", "mean chars A / B",
                            "sign-test p", "position consistency", "unparsed"]
    assert "Judged by verifier" in wr["caption"]
    with open(res / "winrate_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(wr["rows"]) == len(rows)
    for cells, r in zip(wr["rows"], rows):
        assert cells[0] == f"alpagasus-tiny vs {r['model_b']}-tiny"
        assert cells[3] == f"{r['win']} / {r['tie']} / {r['lose']}"
        assert cells[4] == f"{r['winning_score']} [{r['ci_low']}, {r['ci_high']}]"  # the CSV's rounding
        assert cells[5] == f"{r['lc_winning_score']} [{r['lc_ci_low']}, {r['lc_ci_high']}]"
        assert cells[6] == f"{r['mean_chars_a']} / {r['mean_chars_b']}"
        # A's answers are the references, B's add an "x" to every k-th one: B is longer
        assert float(r["mean_chars_b"]) > float(r["mean_chars_a"]) and r["lc_winning_score"] != ""
    assert [img["alt"] for img in pw["images"]] == ["win rates tiny"]
    r = rows[0]
    assert (f"alpagasus-tiny against alpaca-tiny on mini: {r['win']} wins, {r['tie']} ties and {r['lose']} losses "
            f"in {N_ITEMS} items; winning score {r['winning_score']} [{r['ci_low']}, {r['ci_high']}], "
            f"sign-test p = {r['p_value']}. At equal length (length-controlled): {r['lc_winning_score']} "
            f"[{r['lc_ci_low']}, {r['lc_ci_high']}]; mean answer length {r['mean_chars_a']} vs {r['mean_chars_b']} "
            f"characters. The longer answer won {r['longer_wins_share']} of the decided judgements") in pw["text"]


def test_cost_numbers_add_up_and_say_the_verifier_ran_locally(run):
    res, text = run
    cost = Page(text).section("Cost of every judge stage")
    (table,) = cost["tables"]
    col = {h: i for i, h in enumerate(table["header"])}
    num = lambda cells, name: int(cells[col[name]].replace(",", ""))  # noqa: E731
    *stages, total = table["rows"]
    rating = json.loads((res / "rating_cost.json").read_text())
    assert stages[0][col["judgements needed"]] == f"{rating['records']:,}"
    repeats = len(records := load_records(res / "alpaca_52k.json")) - len({record_key(r) for r in records})
    assert repeats >= 7 and num(stages[0], "repeats (judged once)") == repeats
    for cells in stages:
        assert num(cells, "judgements needed") == sum(num(cells, c) for c in (
            "repeats (judged once)", "from cache", "judged now", "not judged"))
        assert cells[col["HTTP requests"]] == "none" and "local" in cells[col["judge"]]
        assert cells[col["USD"]] == "$0.00"
    assert num(stages[1], "judgements needed") == 2 * N_ITEMS  # both orders of every item
    assert num(total, "judgements needed") == sum(num(c, "judgements needed") for c in stages)
    assert "Judged on this machine by verifier: nothing sent, nothing paid" in cost["text"]


def test_provenance_names_commit_config_files_date_and_seeds(run):
    _, text = run
    (table,) = Page(text).section("Provenance")["tables"]
    assert table["header"] == ["commit", "config files, in the order applied", "written (local time)", "seeds"]
    assert table["rows"] == [["unknown", "config/config.yaml → config/smoke.yaml", "2025-01-02 03:04:05+00:00",
                              "data 0, random baseline 42, training 42, bootstrap 0"]]


def test_the_commit_is_git_s_and_marked_when_files_differ(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "f").write_text("a")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "f").write_text("b")
    assert git_commit(tmp_path) == f"{head} with uncommitted changes"


def test_the_winrate_figure_prints_the_csv_s_numbers(tmp_path):
    row = {"model_a": "a", "model_b": "b", "test_set": "t", "n": 200, "win": 60, "tie": 107, "lose": 33,
           "winning_score": 1.135, "ci_low": 1.045, "ci_high": 1.2251, "p_value": 0.00412,
           "position_consistency": 0.8, "unparsed": 0, "relative_score": 1.01, "judge": "j",
           "mean_chars_a": 410.5, "mean_chars_b": 388.0, "longer_wins_share": 0.61, "length_spearman": 0.2,
           "lc_winning_score": 1.1, "lc_ci_low": 1.01, "lc_ci_high": 1.19}
    write_table([row], tmp_path / "w.csv")
    with open(tmp_path / "w.csv", newline="") as fh:
        (back,) = csv.DictReader(fh)
    assert score_label(row) == f"{back['winning_score']} [{back['ci_low']}, {back['ci_high']}]  p={back['p_value']}"
    assert score_label(row) == "1.135 [1.045, 1.2251]  p=0.00412"
    assert list(back)[-7:] == ["mean_chars_a", "mean_chars_b", "longer_wins_share", "length_spearman",
                               "lc_winning_score", "lc_ci_low", "lc_ci_high"]


# Written into a copy of the page: the widest element's right edge against the body's.
FIT_PROBE = """<script>window.addEventListener('load', () => {
  const d = document.documentElement, right = document.body.getBoundingClientRect().right;
  const over = [...document.querySelectorAll('table, figure, img, p')]
    .filter(e => e.getBoundingClientRect().right > right + 0.5).map(e => e.outerHTML.slice(0, 80));
  document.title = JSON.stringify({scroll: d.scrollWidth, client: d.clientWidth, over: over});
});</script>"""


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs a headless Chromium (apt-get install chromium) to lay the page out")
@pytest.mark.parametrize("width", [1400, 1000])
def test_every_table_and_figure_fits_the_page_in_a_browser(run, tmp_path, width):
    _, text = run
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", FIT_PROBE + "</body>"))
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},3000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    import html as html_lib

    m = re.search(r"<title>(\{.*?\})</title>", out.stdout, re.S)
    assert m, out.stderr[-2000:]
    fit = json.loads(html_lib.unescape(m.group(1)))
    assert fit["over"] == [] and fit["scroll"] <= fit["client"], fit
