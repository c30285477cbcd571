"""The README and docs/ cannot rot silently: every module, file and link they name exists, the
README stays a front door, and the pipeline's picture shows today's rule graph."""

from __future__ import annotations

import ast
import glob
import itertools
import re
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 260

# `alpagasus.judging.prompts`, `alpagasus.core.model_files.convert_gguf_to_hf`
MODULE = re.compile(r"\balpagasus(?:\.[A-Za-z_]\w*)+")
# Paths from the repository root, as the pages write them (braces and globs included):
# `src/alpagasus/core/identity.py`, `scripts/{train,generate}.py`, `rules/*.smk`,
# `tests/test_chaos.py::test_x`. Not results/ or cache/: those are what a run writes.
ROOT_DIRS = r"src|alpagasus|rules|scripts|config|bench|tests|docs|envs|slurm|report|\.ci"
PATH = re.compile(rf"(?<![\w/.~-])(?:{ROOT_DIRS})/[\w/{{}},.*-]*(?:::\w+)?")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A test named by its file alone, as docs/reliability.md's rows do: `test_chaos.py::test_x`.
TEST = re.compile(r"(?<![\w/])(test_\w+\.py)::(\w+)")


def mentions(pattern: re.Pattern, group: int = 0) -> list[tuple[str, str]]:
    """(page, what it names) for every match in every page."""
    return [(page.relative_to(REPO).as_posix(), m.group(group))
            for page in PAGES for m in pattern.finditer(page.read_text(encoding="utf-8"))]


def expand_braces(path: str) -> list[str]:
    """`a/{b,c}.py` -> a/b.py, a/c.py; a brace without a comma is a wildcard (`{name}`)."""
    parts = re.split(r"(\{[^{}]*\})", path)
    options = [p[1:-1].split(",") if p.startswith("{") and "," in p else
               ["*"] if p.startswith("{") else [p] for p in parts]
    return ["".join(combo) for combo in itertools.product(*options)]


def defined_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def module_problem(dotted: str) -> str | None:
    """Why ``dotted`` names nothing in src/, or None: the longest prefix that is a module or
    package, then one name that module defines."""
    parts = dotted.split(".")
    here, file = SRC, None
    for i, part in enumerate(parts):
        if (here / part / "__init__.py").is_file():
            here, file = here / part, here / part / "__init__.py"
        elif (here / f"{part}.py").is_file():
            file = here / f"{part}.py"
            rest = parts[i + 1:]
            break
        else:
            rest = parts[i:]
            break
    else:
        return None
    if not rest:
        return None
    if file is None or rest[0] not in defined_names(file):
        where = file.relative_to(REPO) if file else "src/"
        return f"no module or name {rest[0]!r} in {where}"
    return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_the_readme_is_a_front_door():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md has {n} lines (at most {README_MAX_LINES}): move a manual's text to its page under docs/")


def test_every_module_the_pages_name_exists():
    found = mentions(MODULE)
    assert len(found) > 10, "the pattern finds nothing: the test would pass by construction"
    bad = [f"{page}: {dotted}: {why}" for page, dotted in sorted(set(found))
           if (why := module_problem(dotted))]
    assert not bad, "modules named in the docs that do not exist:\n" + "\n".join(bad)


def test_every_file_the_pages_name_exists():
    found = mentions(PATH)
    assert len(found) > 20, "the pattern finds nothing: the test would pass by construction"
    bad = []
    for page, mention in sorted(set(found)):
        path, _, test_name = mention.rstrip(".,").partition("::")
        for one in expand_braces(path):
            base = SRC if one.startswith("alpagasus/") else REPO
            hits = glob.glob(str(base / one))
            if not hits:
                bad.append(f"{page}: {mention}: {one} does not exist")
            elif test_name and not any(defines_test(Path(h), test_name) for h in hits if Path(h).is_file()):
                bad.append(f"{page}: {mention}: no test {test_name} in {one}")
    assert not bad, "files named in the docs that do not exist:\n" + "\n".join(bad)


def defines_test(path: Path, name: str) -> bool:
    return re.search(rf"^\s*(async )?def {name}\b", path.read_text(encoding="utf-8"), flags=re.M) is not None


def test_every_test_the_pages_name_exists():
    found = mentions(TEST)
    assert len(found) > 10, "the pattern finds nothing: the test would pass by construction"
    bad = []
    for page, mention in sorted(set(found)):
        file, _, name = mention.partition("::")
        paths = list((REPO / "tests").rglob(file))
        if not any(defines_test(p, name) for p in paths):
            bad.append(f"{page}: {mention}: " + (f"no test {name} in {paths[0].relative_to(REPO)}" if paths
                                                  else f"no file tests/{file}"))
    assert not bad, "tests named in the docs that do not exist:\n" + "\n".join(bad)


def test_every_link_between_the_pages_resolves():
    checked = 0
    bad = []
    for page in PAGES:
        for m in LINK.finditer(page.read_text(encoding="utf-8")):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: ({target})"
            checked += 1
            if not dest.exists():
                bad.append(f"{where}: {path} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert checked > 10, "no link found: the test would pass by construction"
    assert not bad, "broken links in the docs:\n" + "\n".join(bad)


def test_every_stage_manual_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"pages under docs/ that the README does not link: {unlinked}"


def labels(dot: str) -> set[str]:
    return set(re.findall(r'label = "([^"]+)"', dot))


def test_the_pipeline_picture_shows_todays_rule_graph():
    """docs/rulegraph.svg is drawn by docs/rulegraph.sh from `snakemake --rulegraph`; a rule
    added or removed since means redrawing it."""
    if importlib.util.find_spec("snakemake") is None:
        pytest.skip("snakemake is not installed (pip install -e '.[workflow]')")
    run = subprocess.run([sys.executable, "-m", "snakemake", "--rulegraph", "--cores", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rules = labels(run.stdout)
    assert {"alpaca_data", "rate", "select", "train", "generate", "judge_pair", "winrate", "report"} <= rules, rules
    svg = (REPO / "docs" / "rulegraph.svg").read_text(encoding="utf-8")
    drawn = set(re.findall(r"<text[^>]*>([^<]+)</text>", svg))
    assert drawn == rules, (
        f"docs/rulegraph.svg is out of date (missing {sorted(rules - drawn)}, extra {sorted(drawn - rules)}): "
        "run `bash docs/rulegraph.sh` (needs graphviz)")
