"""Cluster runs (issue #5): the production Slurm profile, and the pipeline on a real Slurm cluster.

Without a cluster (any machine):
  - the production profile (slurm/config.yaml) parses, names no partition/account/GPU type, and the
    test profile differs from it only in the documented keys;
  - `snakemake -n results/winrate_13b.csv --profile slurm` with the real config plans the expected
    jobs, each with the expected resources, and the sbatch line the plugin would submit for each;
  - envs/*.yaml pin exactly what the tests run with (CI installs them as constraints).

On a real two-node Slurm cluster that the tests start here (root, Debian's slurmctld, one slurmd
per node, munge, four fake a100 GPUs per node; tests/slurm/cluster.sh), through the official
executor plugin:
  - the harness: a CPU rule, a GPU rule that starts one process per granted GPU, and a join;
  - preemption: a GPU job signalled before its time limit checkpoints and is rerun, a requeued
    one restarts, and both resume from the checkpoint;
  - the miniature DAG: every job ran as a Slurm job (or is a declared localrule), GPU rules in the
    GPU partition with their GPUs, CPU rules with none, and the outputs equal a local run's.
  - multi-node training: `nodes: 2` gives one job on both nodes, one launcher per node, and the
    ranks train with the single-process run's losses.

The cluster tests skip cleanly when not root, when the packages cannot be installed or the
cluster cannot start; ALPAGASUS_REQUIRE_SLURM=1 (set by .ci/slurm.sh) turns those skips into
failures. Every Snakemake run under Slurm is bounded by `timeout -k 10 N`, and the cluster is
stopped at the end of the session (and on start, and by .ci/slurm.sh on exit).
"""

from __future__ import annotations

import fcntl
import filecmp
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

# Slow too: the fast tier (-m 'not slow') never starts a cluster nor plans the 13B DAG. One
# xdist worker holds the session's cluster (one a machine: LOCK_FILE).
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
HARNESS = REPO / "tests" / "slurm" / "harness" / "Snakefile"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"
GPUS_OVERLAY = REPO / "tests" / "slurm" / "gpus.yaml"
POLLING = str(REPO / "tests" / "slurm" / "snakemake_polling.py")
PROD_PROFILE = REPO / "slurm" / "config.yaml"
LOCK_FILE = "/tmp/alpagasus-slurm-ci.lock"
REQUIRE = os.environ.get("ALPAGASUS_REQUIRE_SLURM") == "1"

# Keys in which tests/slurm/profile/config.yaml may differ from slurm/config.yaml, and why
# (documented line by line in the test profile).
ALLOWED_PROFILE_DIFFERENCES = {
    "jobs": "2 real cores",
    "slurm-status-command": "no slurmdbd on the test node: squeue instead of sacct",
    "slurm-init-seconds-before-status-checks": "minutes-long test: poll fast",
    "seconds-between-status-checks": "minutes-long test: poll fast",
}
GPU_RULES = {"train", "generate"}


def _real_config() -> dict:
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _skip_or_fail(reason: str):
    if REQUIRE:
        pytest.fail(reason + " (ALPAGASUS_REQUIRE_SLURM=1)")
    pytest.skip(reason)


def _snakemake(args, cwd, timeout_s, log_path, env=None, background=False):
    """snakemake under `timeout -k 10 N` (a Slurm run that loses its jobs must never hang CI),
    polling Slurm as often as the test profile says (tests/slurm/snakemake_polling.py)."""
    cmd = ["timeout", "-k", "10", str(timeout_s), sys.executable, POLLING, *map(str, args)]
    out = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    if background:
        return proc, out
    try:
        proc.wait(timeout=timeout_s + 30)
    finally:
        out.close()
    return proc.returncode, Path(log_path).read_text(errors="replace")


# --- parsing Snakemake's and Slurm's output ----------------------------------------------------

# A checkpoint's job block is headed `checkpoint X:` (`localcheckpoint X:` when local).
_JOB_HEADER = re.compile(r"^(local)?(?:rule|checkpoint) (\w+):\s*$")


def parse_jobs(log: str) -> list[dict]:
    """Job blocks of a Snakemake log or dry run: rule, local?, jobid, wildcards, resources and,
    under the Slurm executor, the Slurm job id it was submitted as."""
    jobs, cur = [], None
    submitted = {}
    for line in log.splitlines():
        m = re.match(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", line)
        if m:
            submitted[m.group(1)] = m.group(2)
        m = _JOB_HEADER.match(line)
        if m:
            cur = {"rule": m.group(2), "local": m.group(1) == "local", "resources": {},
                   "wildcards": {}}
            jobs.append(cur)
            continue
        if cur is None or not line.startswith("    "):
            if line and not line.startswith(" "):
                cur = None
            continue
        key, _, value = line.strip().partition(": ")
        if key == "jobid":
            cur["jobid"] = value
        elif key in ("resources", "wildcards"):
            for item in value.split(", "):
                k, _, v = item.partition("=")
                cur[key][k] = v
    for job in jobs:
        job["slurm_jobid"] = submitted.get(job.get("jobid"))
    return jobs


def job_stats(log: str) -> dict[str, int]:
    block = log.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


def slurm_jobs(run_id: str | None = None) -> dict[str, dict]:
    """Every job slurmctld still knows (MinJobAge=3600 on the test cluster), by job id."""
    out = subprocess.run(["scontrol", "show", "job", "-d", "-o"], capture_output=True, text=True,
                         timeout=20).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if "JobId" not in fields:
            continue
        if run_id and fields.get("JobName") != run_id:
            continue
        jobs[fields["JobId"]] = fields
    return jobs


def run_id_of(log: str) -> str:
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, "no 'SLURM run ID' in the Snakemake log: the Slurm executor did not run"
    return m.group(1)


def rule_of(slurm_job: dict) -> str:
    comment = slurm_job.get("Comment", "")
    assert comment.startswith("rule_"), slurm_job
    return comment[len("rule_"):].split("_wildcards_")[0]


# --- the production profile (no cluster needed) -----------------------------------------------

def _flat_values(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _flat_values(v)
        else:
            yield v


def test_production_profile_parses_and_names_nothing_cluster_specific():
    prof = yaml.safe_load(PROD_PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert prof["restart-times"] >= 1 and prof["rerun-incomplete"] is True
    assert prof["slurm-requeue"] is True
    assert prof["latency-wait"] >= 30
    # One place for names: the `slurm:` section of config/config.yaml, not the profile.
    names = {v for v in (_real_config()["slurm"] or {}).values() if v}
    assert not names & {str(v) for v in _flat_values(prof)}, "partition/account/GPU names belong in config"
    assert "slurm_partition" not in (prof.get("default-resources") or {})
    # Things that would silently override rules' resources.
    assert not {"cpus_per_task", "mem_mb_per_cpu", "slurm_extra"} & set(prof.get("default-resources") or {})


def test_test_profile_differs_only_where_documented():
    prod = yaml.safe_load(PROD_PROFILE.read_text())
    test = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())
    differing = {k for k in set(prod) | set(test) if prod.get(k) != test.get(k)}
    assert differing <= set(ALLOWED_PROFILE_DIFFERENCES), differing - set(ALLOWED_PROFILE_DIFFERENCES)
    assert test["slurm-status-command"] == "squeue"


def _fake_job(rule, resources, threads):
    class Res(dict):
        def __getattr__(self, k):
            try:
                return self[k]
            except KeyError:
                raise AttributeError(k) from None

    return SimpleNamespace(name=rule, resources=Res(resources), threads=threads, is_group=lambda: False)


def _sbatch_line(job: dict) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for a planned job."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = {}
    for k, v in job["resources"].items():
        if v in ("<TBD>",) or k in ("tmpdir", "mem", "disk", "mem_mib", "disk_mib", "disk_mb"):
            continue
        res[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
    threads = int(res.get("cpus_per_task", 1))
    fake = _fake_job(job["rule"], res, threads)
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": f"rule_{job['rule']}",
              "account": f" -A {res['slurm_account']}" if res.get("slurm_account") else "",
              "partition": f" -p {res['slurm_partition']}" if res.get("slurm_partition") else "",
              "workdir": "WD"}
    settings = SimpleNamespace(requeue=True, no_requeue=False, qos=None, reservation=None)
    return get_submit_command(fake, params, settings=settings) + set_gres_string(fake)


@pytest.fixture(scope="module")
def dry_run_13b(tmp_path_factory):
    """`snakemake -n results/winrate_13b.csv --profile slurm` from the repo root, with the real
    config plus an overlay that renames partitions/account/GPU type (names must flow from config)."""
    work = tmp_path_factory.mktemp("dry13b")
    overlay = work / "names.yaml"
    names = {"gpu_partition": "gpu_a100x4", "cpu_partition": "cpu_std", "account": "proj42",
             "gpu_type": "a100_80g"}
    overlay.write_text(yaml.safe_dump({"slurm": names}))
    args = ["-n", "results/winrate_13b.csv", "--profile", "slurm", "--directory", work,
            "--configfile", REPO / "config" / "config.yaml", overlay]
    rc, log = _snakemake(args, REPO, 300, work / "dry.log")
    assert rc == 0, log[-3000:]
    return names, parse_jobs(log), job_stats(log)


def test_dry_run_13b_plans_expected_jobs(dry_run_13b):
    _, jobs, stats = dry_run_13b
    cfg = _real_config()
    variants = sorted({v for pair in cfg["evaluation"]["comparisons"] for v in pair})
    n_sets = len(cfg["generation"]["test_sets"])
    expected = {
        "train": len(variants),
        "generate": len(variants) * n_sets,
        "judge_pair": len(cfg["evaluation"]["comparisons"]) * n_sets,
        "test_set": n_sets,
        "winrate": 1,
        "rate": 1,
        "alpaca_data": 1,
        "select": 1,
        "random_baseline": 1,
    }
    for rule, n in expected.items():
        assert stats.get(rule) == n, (rule, stats)
    total = stats.pop("total")
    assert total == sum(stats.values()), stats
    trained = sorted(j["wildcards"]["variant"] for j in jobs if j["rule"] == "train")
    assert trained == variants
    assert {j["wildcards"]["size"] for j in jobs if j["rule"] in GPU_RULES} == {"13b"}


def test_dry_run_13b_gpu_jobs_get_config_resources(dry_run_13b):
    names, jobs, _ = dry_run_13b
    size = _real_config()["training"]["sizes"]["13b"]
    for rule, block in (("train", size["resources"]), ("generate", size["generate_resources"])):
        planned = [j for j in jobs if j["rule"] == rule]
        assert planned
        for j in planned:
            r = j["resources"]
            assert r["slurm_partition"] == names["gpu_partition"], (rule, r)
            assert r["gres"] == f"gpu:{names['gpu_type']}:{block['gpus']}", (rule, r)
            assert int(r["cpus_per_task"]) == block["cpus_per_task"]
            assert int(r["mem_mb"]) == block["mem_mb"]
            assert int(r["runtime"]) == block["runtime_min"]
            assert r.get("slurm_account") == names["account"], (rule, r)
            # Part 3: a signal before the time limit, so training checkpoints and is rerun.
            assert re.search(r"--signal=(B:)?USR1@\d+", r.get("slurm_extra", "")), (rule, r)
            line = _sbatch_line(j)
            assert f"-p {names['gpu_partition']}" in line
            assert f"--gres=gpu:{names['gpu_type']}:{block['gpus']}" in line
            assert f"--cpus-per-task={block['cpus_per_task']}" in line
            assert f"--mem {block['mem_mb']}" in line and f"-t {block['runtime_min']}" in line
            assert "--requeue" in line and f"-A {names['account']}" in line
            # tasks on a GPU job becomes --ntasks-per-gpu: 4x the CPUs, pending forever.
            assert "--ntasks-per-gpu" not in line, line


def declared_localrules(root: Path = REPO) -> set[str]:
    """Rules the workflow runs inside the Snakemake process (`localrules:` directives): they never
    become Slurm jobs. (A dry run prints them as `rule`, like the others.)"""
    names = set()
    for f in [root / "Snakefile", root / "workflow" / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^localrules:(.*)$", line)
            if not m:
                continue
            block = [m.group(1)]
            for nxt in lines[i + 1:]:
                if not nxt.startswith((" ", "\t")) or not nxt.strip():
                    break
                block.append(nxt)
            names |= set(re.findall(r"[A-Za-z_]\w*", " ".join(re.sub(r"#.*", "", b) for b in block)))
    return names


def test_dry_run_13b_cpu_jobs_never_hold_a_gpu(dry_run_13b):
    names, jobs, _ = dry_run_13b
    local = declared_localrules()
    assert not local & GPU_RULES
    cpu_jobs = [j for j in jobs if j["rule"] not in GPU_RULES and j["rule"] not in local]
    assert cpu_jobs
    for j in cpu_jobs:
        r = j["resources"]
        assert not r.get("gres") and not r.get("gpu"), (j["rule"], r)
        line = _sbatch_line(j)
        assert "--gres" not in line and "--gpus" not in line, line
        # The CPU partition from config (a job naming none would go to the cluster's default).
        assert r.get("slurm_partition") == names["cpu_partition"], (j["rule"], r)
        assert r.get("slurm_account") == names["account"], (j["rule"], r)


def _env_pins() -> dict[str, dict[str, str]]:
    """envs/{name}.yaml -> {package (normalised): pinned version}."""
    pins = {}
    for path in sorted((REPO / "envs").glob("*.yaml")):
        deps = yaml.safe_load(path.read_text())["dependencies"]
        assert "python=3.11" in deps, path.name
        pip = next(d["pip"] for d in deps if isinstance(d, dict))
        pins[path.stem] = {}
        for req in pip:
            pkg, sep, pinned = req.partition("==")
            assert sep and re.fullmatch(r"[\w.]+", pinned), f"envs/{path.name}: {req} is not pinned"
            pins[path.stem][re.sub(r"[-_.]+", "-", pkg).lower()] = pinned
    return pins


def test_envs_pin_what_the_tests_run_with():
    """The pins are the versions this suite passes with (.ci/run installs them as constraints):
    a package installed here at another version fails, naming both, until the pins are updated
    after the suite passes with it. They satisfy pyproject.toml's ranges, and one package has
    one version in every env."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    pins = _env_pins()
    assert set(pins) == {"api", "train", "report", "vllm", "vllm-cpu"}
    # vLLM's envs pin their own transformers (below 5.20, training's is 5.24) and are not this
    # interpreter's: tests/test_vllm_generation.py checks them against the vLLM interpreter.
    pins = {env: p for env, p in pins.items() if not env.startswith("vllm")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = {name: [Requirement(r) for r in rs] for name, rs in
            {"base": project["dependencies"], **project["optional-dependencies"]}.items()}
    # Which env must hold which of pyproject's lists (test and qlora are not the rules' business;
    # snakemake and its plugin run the rules, outside them).
    for env, lists in {"api": ["base"], "train": ["base", "train"], "report": []}.items():
        for req in (r for name in lists for r in reqs[name]):
            key = re.sub(r"[-_.]+", "-", req.name).lower()
            assert key in pins[env], f"envs/{env}.yaml does not pin {req.name} (pyproject.toml: {req})"
            assert req.specifier.contains(pins[env][key]), f"envs/{env}.yaml {key}=={pins[env][key]} is outside {req}"
    for req in reqs["workflow"]:
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if not key.startswith("snakemake"):  # the data rule's readers, in the api env
            assert key in pins["api"] and req.specifier.contains(pins["api"][key]), req
    versions: dict[str, set] = {}
    for env in pins.values():
        for pkg, v in env.items():
            versions.setdefault(pkg, set()).add(v)
    assert {p: v for p, v in versions.items() if len(v) > 1} == {}
    drift = []
    for pkg, (pinned,) in sorted(versions.items()):
        try:
            installed = version(pkg)
        except PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != pinned:  # torch's local tag: 2.13.0+cpu is 2.13.0
            drift.append(f"{pkg}=={pinned} in envs/, installed {installed}")
    assert not drift, "envs/*.yaml pins differ from this environment: " + "; ".join(drift)
    # Every env the rules name exists (paths are relative to the rule file).
    for smk in (REPO / "rules").glob("*.smk"):
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / rel).resolve().is_file(), (smk.name, rel)


def test_ci_installs_the_env_pins_as_constraints():
    """.ci/run derives its pip constraints from envs/*.yaml with a sed line: it reads every pin."""
    text = (REPO / ".ci" / "run").read_text()
    line = next(l for l in text.splitlines() if l.lstrip().startswith("sed ") and "envs/" in l)
    script = re.search(r"sed -n '([^']+)'", line).group(1)
    out = subprocess.run(["sed", "-n", script, *sorted(map(str, (REPO / "envs").glob("*.yaml")))],
                         capture_output=True, text=True, check=True).stdout.split()
    expected = {f"{p}=={v}" for env in _env_pins().values() for p, v in env.items()}
    assert {re.sub(r"[-_.]+", "-", c.split("==")[0]).lower() + "==" + c.split("==")[1] for c in out} == expected


# --- the real cluster --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def slurm_cluster():
    if sys.platform != "linux" or os.geteuid() != 0:
        _skip_or_fail("the Slurm cluster tests need root on Linux")
    if not shutil.which("timeout"):
        _skip_or_fail("coreutils timeout missing")
    lock = open(LOCK_FILE, "w")
    deadline = time.time() + 1200
    while True:  # one test cluster per machine: wait for another session's to finish
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.time() > deadline:
                _skip_or_fail(f"{LOCK_FILE} held by another Slurm test session for 20 min")
            time.sleep(2)
    slurm = _real_config()["slurm"]
    env = {**os.environ,
           "SLURM_CI_GPU_PARTITION": slurm["gpu_partition"],
           "SLURM_CI_CPU_PARTITION": slurm["cpu_partition"],
           "SLURM_CI_GPU_TYPE": slurm["gpu_type"]}
    try:
        inst = subprocess.run(["bash", CLUSTER_SH, "install"], capture_output=True, text=True,
                              timeout=600, env=env)
        if inst.returncode != 0:
            _skip_or_fail(f"Slurm packages not installable: {inst.stderr[-1500:]}")
        start = subprocess.run(["bash", CLUSTER_SH, "start"], capture_output=True, text=True,
                               timeout=120, env=env)
        if start.returncode != 0:
            _skip_or_fail(f"Slurm cluster did not start: {start.stderr[-3000:]}")
        yield SimpleNamespace(**slurm, env=env)
    finally:
        subprocess.run(["bash", CLUSTER_SH, "stop"], capture_output=True, text=True, timeout=120)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _harness_args(cluster, *extra):
    return ["-s", HARNESS, "--profile", TEST_PROFILE, "--config",
            f"gpu_partition={cluster.gpu_partition}", f"cpu_partition={cluster.cpu_partition}",
            f"gpu_type={cluster.gpu_type}", "account=", *extra]


def test_harness_on_real_cluster(slurm_cluster, tmp_path):
    t0 = time.time()
    rc, log = _snakemake(_harness_args(slurm_cluster), tmp_path, 300, tmp_path / "run.log")
    assert rc == 0, log[-4000:]
    run_id = run_id_of(log)
    jobs = slurm_jobs(run_id)
    by_rule = {rule_of(j): j for j in jobs.values()}
    assert sorted(by_rule) == ["cpu_step", "gpu_step", "join"], by_rule.keys()
    for rule, j in by_rule.items():
        assert j["JobState"] == "COMPLETED", j
        if rule == "gpu_step":
            assert j["Partition"] == slurm_cluster.gpu_partition
            assert j["JOB_GRES"] == f"gpu:{slurm_cluster.gpu_type}:4", j
        else:
            assert j["Partition"] == slurm_cluster.cpu_partition
            assert j["JOB_GRES"] == "(null)", j
    gpu = (tmp_path / "gpu.txt").read_text()
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in gpu
    assert f"SLURM_JOB_PARTITION={slurm_cluster.gpu_partition}" in gpu
    # One process per granted GPU, all in one process group.
    assert "world_size=4 all_reduce=4 local_world_size=4" in gpu
    cpu = (tmp_path / "cpu.txt").read_text()
    assert "CUDA_VISIBLE_DEVICES=unset" in cpu, cpu
    assert f"SLURM_JOB_PARTITION={slurm_cluster.cpu_partition}" in cpu
    # Snakemake kept the Slurm logs of successful jobs (slurm-keep-successful-logs).
    assert list((tmp_path / ".snakemake" / "slurm_logs" / "rule_gpu_step").glob("*.log"))
    print(f"harness through Slurm: {time.time() - t0:.0f} s")


def _wait_for(pred, timeout_s, what, proc=None):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _step(ckpt: Path) -> int:
    try:
        return json.loads((ckpt / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _job_state(jobid: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%T"], capture_output=True, text=True,
                          timeout=20).stdout.strip()


def _running_job(rule: str, not_in=()) -> str | None:
    """A running job of ``rule`` (its comment: rule_RULE, or rule_RULE_wildcards_... for a job
    with wildcards)."""
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%A %k"], capture_output=True,
                         text=True, timeout=20).stdout
    for line in out.splitlines():
        jid, _, comment = line.partition(" ")
        if comment.strip() == f"rule_{rule}" or comment.strip().startswith(f"rule_{rule}_wildcards_"):
            if jid not in not_in:
                return jid
    return None


def _stop(proc, out) -> None:
    """A background snakemake (_snakemake(background=True)) stopped, with its jobs' group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    out.close()


def _finished(proc, out, log_path: Path, timeout_s: float) -> str:
    """The log of a background snakemake once it has ended (stopped if it outlives
    ``timeout_s``). Fails unless it succeeded."""
    try:
        proc.wait(timeout=timeout_s)
    finally:
        _stop(proc, out)
    log = log_path.read_text(errors="replace")
    assert proc.returncode == 0, log[-4000:]
    return log


def test_preemption_signal_and_requeue_resume_from_checkpoint(slurm_cluster, tmp_path):
    """Part 3. (1) The time-limit warning: Slurm's `--signal=USR1@600` reaches every process of
    the job step; here it is sent at once with `scancel --signal=USR1` (the same delivery). The
    trainer checkpoints and exits, Snakemake survives the signal (the Snakefile ignores SIGUSR1)
    and submits the job again (restart-times), which resumes. (2) Preemption/requeue: `scontrol
    requeue` puts the running job back in the queue under the same id; it restarts and resumes."""
    # Enough steps for the signal, the rerun and the requeue to land mid-run (the requeue comes
    # at about step 8, with 8 s of steps still to go), and no more: each is 0.5 s of the test.
    steps = 24
    proc, out = _snakemake(_harness_args(slurm_cluster, "resumable_steps=%d" % steps, "--", "resumed.txt"),
                           tmp_path, 400, tmp_path / "run.log", background=True)
    ckpt = tmp_path / "ckpt" / "resumable"
    try:
        first = _wait_for(lambda: _running_job("resumable"), 120, "the job to run", proc)
        _wait_for(lambda: _step(ckpt) >= 3, 120, "step 3", proc)
        # The job's own sbatch asked for the warning signal.
        info = subprocess.run(["scontrol", "show", "job", first], capture_output=True, text=True).stdout
        subprocess.run(["scancel", "--signal=USR1", first], check=True, timeout=20)
        second = _wait_for(lambda: _running_job("resumable", not_in={first}), 180,
                           "the rerun after the signal", proc)
        at_signal = _step(ckpt)
        _wait_for(lambda: _step(ckpt) >= at_signal + 3, 120, "progress of the rerun", proc)
        subprocess.run(["scontrol", "requeue", second], check=True, timeout=20)
        # A requeued job waits ~2 min (BeginTime) before it may start again; don't wait here.
        _wait_for(lambda: _job_state(second) == "PENDING", 60, "the requeued job to pend", proc)
        _wait_for(lambda: subprocess.run(["scontrol", "update", f"JobId={second}", "StartTime=now"],
                                         capture_output=True, timeout=20).returncode == 0,
                  30, "scontrol update StartTime=now", proc)
    except BaseException:
        _stop(proc, out)
        raise
    log = _finished(proc, out, tmp_path / "run.log", 420)
    starts = (ckpt / "starts.txt").read_text().splitlines()
    assert re.fullmatch(r"start step=0 job=%s" % first, starts[0]), starts
    assert re.fullmatch(r"signal 10 at step=(\d+): checkpointed, exiting", starts[1]), starts
    resumed_at = int(re.search(r"step=(\d+)", starts[1]).group(1))
    assert starts[2] == f"start step={resumed_at} job={second}", starts  # resumed, not step 0
    # Requeue: Slurm's SIGTERM reached the trainer, which checkpointed; the job restarted under
    # the same id and resumed there.
    m = re.fullmatch(r"signal 15 at step=(\d+): checkpointed, exiting", starts[3])
    assert m and int(m.group(1)) >= resumed_at + 3, starts
    assert starts[4] == f"start step={m.group(1)} job={second}", starts
    assert len(starts) == 5, starts
    assert (tmp_path / "resumed.txt").is_file()
    jobs = slurm_jobs(run_id_of(log))
    assert jobs[second]["Restarts"] == "1" and jobs[second]["JobState"] == "COMPLETED", jobs[second]
    assert jobs[first]["JobState"] == "FAILED", jobs[first]  # exit 3: Snakemake's restart-times took over
    assert "Requeue=1" in info


# --- the miniature DAG through Slurm, compared with a local run --------------------------------

# Outputs that differ between any two runs, local or not, and why.
NONDETERMINISTIC = {
    "logs": "timestamps, progress bars and durations",
    "benchmarks": "wall-clock measurements",
}
# Not compared at all: the trackers' own stores (run ids, times), where the run reported to them.
TRACKERS = "tracking"
# JSON keys that hold timings or host facts; everything else in these files must be equal.
# Timings, and where a job ran (train_log.json's `nodes`: a Slurm node vs this host's name).
VOLATILE_JSON_KEYS = {"wall_time_s", "tokens_per_s", "peak_memory_mb", "seconds", "elapsed_s",
                      "duration_s", "started_at", "finished_at", "created_at", "timestamp", "time_s",
                      "nodes",
                      # the records index's fingerprint of the file it describes (data/stream.py)
                      "mtime_ns"}
# Columns of the HTML report's tables that hold timings (training speed); the rest must be equal.
VOLATILE_HTML_HEADER = re.compile(r"tokens/s|wall|seconds|time", re.I)


def _mask_html_timings(text: str) -> str:
    def table(m):
        rows = re.findall(r"<tr>.*?</tr>", m.group(0), re.S)
        if not rows:
            return m.group(0)
        heads = re.findall(r"<th[^>]*>(.*?)</th>", rows[0], re.S)
        cols = {i for i, h in enumerate(heads) if VOLATILE_HTML_HEADER.search(h)}
        if not cols:
            return m.group(0)
        out = m.group(0)
        for row in rows[1:]:
            cells = re.findall(r"<td[^>]*>.*?</td>", row, re.S)
            masked = row
            for i in sorted(cols):
                if i < len(cells):
                    masked = masked.replace(cells[i], "<td>(timing)</td>", 1)
            out = out.replace(row, masked, 1)
        return out

    return re.sub(r"<table.*?</table>", table, text, flags=re.S)


def _copy_checkout(dst: Path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def _strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_JSON_KEYS}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def compare_results(a: Path, b: Path) -> tuple[list[str], list[str], list[str]]:
    """(byte-equal files, equal-up-to-timings files, differing files) between two result trees."""
    def outputs(root: Path) -> set[Path]:  # not the trackers' stores, nor the checkout's results/.gitkeep
        return {r for p in root.rglob("*") if p.is_file()
                and (r := p.relative_to(root)).parts[0] != TRACKERS and r != Path(".gitkeep")}

    files_a, files_b = outputs(a), outputs(b)
    assert files_a == files_b, (sorted(map(str, files_a - files_b)), sorted(map(str, files_b - files_a)))
    same, same_but_timings, differ = [], [], []
    for rel in sorted(files_a):
        # tracking.json: a checkpoint's run ids in the trackers (new ones each run)
        if rel.parts[0] in NONDETERMINISTIC or rel.name in (".snakemake_timestamp", "tracking.json"):
            continue
        if filecmp.cmp(a / rel, b / rel, shallow=False):
            same.append(str(rel))
            continue
        if rel.suffix == ".json":
            ja, jb = (json.loads((x / rel).read_text()) for x in (a, b))
            if _strip_volatile(ja) == _strip_volatile(jb):
                same_but_timings.append(str(rel))
                continue
        if rel.suffix == ".html":
            ha, hb = (_mask_html_timings((x / rel).read_text()) for x in (a, b))
            if ha == hb:
                same_but_timings.append(str(rel))
                continue
        differ.append(str(rel))
    return same, same_but_timings, differ


@pytest.mark.timeout(2400)
def test_miniature_dag_on_real_cluster(slurm_cluster, tmp_path, request):
    """The miniature's DAG through the Slurm plugin, every job a Slurm job but the declared
    localrules, asking for fake GPUs (tests/slurm/gpus.yaml), and its outputs equal a local run's:
    conftest.small_dag's (200 records, two variants trained 4 steps, one comparison: the models
    learn little; the runs are compared, not the scores). ALPAGASUS_SLURM_FULL_MINIATURE=1 runs
    config/smoke.yaml as it is instead, with a local run of its own beside it."""
    via_slurm = tmp_path / "slurm"
    via_slurm.mkdir()
    _copy_checkout(via_slurm)
    full = os.environ.get("ALPAGASUS_SLURM_FULL_MINIATURE") == "1"
    t0 = time.time()
    if full:
        cfg_args, target, local = ["--configfile", "config/smoke.yaml", GPUS_OVERLAY.relative_to(REPO)], [], tmp_path / "local"
        local.mkdir()
        _copy_checkout(local)
        # Each run imports the package from its own copy (ahead of an editable install elsewhere).
        # The local run goes on meanwhile: the Slurm run spends much of its time polling.
        local_proc, local_out = _snakemake(["--cores", "1", *cfg_args], local, 1500, tmp_path / "local.log",
                                           env={"PYTHONPATH": str(local / "src")}, background=True)
        local_results = local / "results" / "smoke"
    else:
        from conftest import small_dag_args, small_dag_config

        (via_slurm / "o.yaml").write_text(yaml.safe_dump(small_dag_config()))
        target, *cfg_args = small_dag_args(via_slurm)
        cfg_args, target = [*cfg_args, GPUS_OVERLAY], [target]
        local_proc = None
    try:
        rc, log = _snakemake([*target, "--profile", "tests/slurm/profile", *cfg_args], via_slurm, 1500,
                             tmp_path / "slurm.log", env={"PYTHONPATH": str(via_slurm / "src")})
        t_slurm = time.time() - t0
        if local_proc is not None:
            local_proc.wait(timeout=1530)
    finally:
        if local_proc is not None:
            if local_proc.poll() is None:
                os.killpg(local_proc.pid, signal.SIGKILL)
            local_out.close()
    assert rc == 0, log[-5000:]
    if full:
        log_l = (tmp_path / "local.log").read_text(errors="replace")
        assert local_proc.returncode == 0, log_l[-5000:]
        results = via_slurm / "results" / "smoke"
    else:
        small_dag_work = request.getfixturevalue("small_dag")[0]  # built after: the two never overlap
        local_results, results = small_dag_work / "results", via_slurm / "results"
    print(f"miniature DAG: {t_slurm:.0f} s through Slurm, {time.time() - t0:.0f} s for both")

    # Every job ran as a Slurm job, except the Snakefile's declared localrules.
    jobs = parse_jobs(log)
    stats = job_stats(log)
    # The data and selection rules are checkpoints (content-keyed reruns, docs/reliability.md):
    # the first plan counts jobs that the DAG, updated after them, may not need; every job that
    # ran was planned, no rule more often than planned.
    ran = collections.Counter(j["rule"] for j in jobs)
    assert len(jobs) <= stats["total"], (len(jobs), stats)
    assert all(n <= stats.get(rule, 0) for rule, n in ran.items()), (ran, stats)
    slurm = slurm_jobs(run_id_of(log))
    remote = [j for j in jobs if not j["local"]]
    assert remote, "no job went to Slurm"
    for j in remote:
        assert j["slurm_jobid"] in slurm, j
        sj = slurm[j["slurm_jobid"]]
        assert rule_of(sj) == j["rule"] and sj["JobState"] == "COMPLETED", sj
        gres = j["resources"].get("gres")
        if j["rule"] in GPU_RULES:
            assert sj["Partition"] == slurm_cluster.gpu_partition, sj
            assert gres and sj["JOB_GRES"] == gres, (gres, sj["JOB_GRES"])
        else:
            assert not gres and sj["JOB_GRES"] == "(null)", sj
            assert sj["Partition"] == slurm_cluster.cpu_partition, sj
    assert len(slurm) == len(remote), "Slurm ran jobs Snakemake does not account for"
    local_rules = {j["rule"] for j in jobs if j["local"]}
    assert not local_rules & GPU_RULES
    assert local_rules <= declared_localrules(via_slurm) | {"all"}, local_rules
    assert {"train", "generate"} <= {j["rule"] for j in remote}

    # The training rule logs the GPUs Slurm granted and the world size it ran with.
    for j in remote:
        if j["rule"] != "train":
            continue
        wc = j["wildcards"]
        n_gpus = int(j["resources"]["gres"].rsplit(":", 1)[1])
        train_log = (results / "logs" / "train" / f"{wc['variant']}-{wc['size']}.log").read_text()
        visible = ",".join(map(str, range(n_gpus)))
        assert f"CUDA_VISIBLE_DEVICES={visible}" in train_log, train_log[:2000]
        m = re.search(r"world_size=(\d+)", train_log)
        assert m, train_log[:2000]
        # Fake GPUs and a CPU torch here: no usable CUDA device, so one process. On a real node
        # torch sees the granted GPUs and the world size equals their number.
        try:
            import torch

            usable = torch.cuda.device_count()
        except Exception:
            usable = 0
        assert int(m.group(1)) == max(1, min(n_gpus, usable))

    # The outputs equal a local run's.
    same, same_but_timings, differ = compare_results(results, local_results)
    print(f"{len(same)} outputs byte-equal, {len(same_but_timings)} equal up to timings: "
          f"{same_but_timings}")
    assert not differ, differ
    assert any(p.startswith("winrate_") for p in same), same


TWO_NODES_OVERLAY = REPO / "tests" / "slurm" / "two_nodes.yaml"


@pytest.mark.timeout(900)
def test_training_on_two_nodes(slurm_cluster, tmp_path):
    """`resources.nodes: 2` through the Slurm plugin: one job on two nodes, whose train rule runs
    one launcher per node with `srun` (alpagasus.training.launch_command) inside the plugin's own
    `srun -n1` step; the ranks meet and train as one, with the single-process run's losses."""
    from alpagasus.data.miniature import make_records
    from alpagasus.training import spec_from_config, train

    root = tmp_path / "checkout"
    root.mkdir()
    _copy_checkout(root)
    # Only the train rule runs: its input is put in place (the DAG test covers the rest).
    data = root / "results" / "smoke" / "filtered_9k.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(make_records(300, 0.0, seed=11)))
    cfgs = ["config/smoke.yaml", TWO_NODES_OVERLAY.relative_to(REPO)]
    rc, log = _snakemake(["results/smoke/checkpoints/alpagasus-tiny", "--allowed-rules", "train",
                          "--profile", "tests/slurm/profile", "--configfile", *cfgs],
                         root, 600, tmp_path / "slurm.log", env={"PYTHONPATH": str(root / "src")})
    train_log_text = (root / "results/smoke/logs/train/alpagasus-tiny.log")
    assert rc == 0, log[-4000:] + (train_log_text.read_text()[-4000:] if train_log_text.exists() else "")

    (job,) = slurm_jobs(run_id_of(log)).values()
    assert rule_of(job) == "train" and job["JobState"] == "COMPLETED", job
    assert job["NumNodes"] == "2" and job["NodeList"] == "node[1-2]", job
    text = train_log_text.read_text()
    assert "rank 0 of 2 on node1" in text and "rank 1 of 2 on node2" in text, text[-3000:]
    ckpt = root / "results/smoke/checkpoints/alpagasus-tiny"
    two = json.loads((ckpt / "train_log.json").read_text())
    assert two["world_size"] == 2 and two["nodes"] == ["node1", "node2"]

    spec, _ = spec_from_config([str(REPO / "config/config.yaml"), str(REPO / "config/smoke.yaml"),
                                str(TWO_NODES_OVERLAY)], "tiny", "alpagasus", str(data), str(tmp_path / "one"))
    spec.progress = False
    one = train(spec)
    assert one["world_size"] == 1
    assert [s["loss"] for s in two["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-4)


# --- sharded rating through Slurm (issue #18 item 3) ------------------------------------------


def _shard_of(slurm_job: dict) -> str:
    return slurm_job.get("Comment", "").rsplit("_", 1)[-1]




@pytest.mark.timeout(600)
def test_rating_shards_are_slurm_jobs_and_a_cancelled_one_reruns_alone(slurm_cluster, tmp_path, monkeypatch):
    """`rating.shards: 4`: four Slurm jobs of the judge's size (CPU jobs for an API judge) rate
    a quarter of the records each against the fake server on this node; one is cancelled with
    scancel while it is paying, Snakemake runs that shard again (restart-times) and no other;
    the gathered scores equal the library's unsharded rating, and no judgement is paid twice."""
    from alpagasus.core.config import load
    from alpagasus.data import load_records
    from alpagasus.judging.rating import rate_records
    from alpagasus.testing.fake_openai import FakeOpenAIServer

    root = tmp_path / "checkout"
    root.mkdir()
    _copy_checkout(root)
    alpaca = json.loads((REPO.parent / "shared" / "data" / "alpaca" / "alpaca_data.json").read_text())[:120]
    (root / "alpaca.json").write_text(json.dumps(alpaca))
    key = "sk-shards-" + os.urandom(8).hex()
    with FakeOpenAIServer(api_key=key, latency_s=0.15) as srv:
        overlay = {"data": {"source": "local", "local_path": "alpaca.json", "expected_records": None},
                   "judges": {"fake": {"backend": "openai", "model": "gpt-fake", "base_url": srv.base_url,
                                       "concurrency": 1, "timeout_s": 10, "usd_per_1m_input_tokens": 1.0,
                                       "usd_per_1m_output_tokens": 2.0}},
                   "rating": {"judge": "fake", "max_usd": 5.0, "shards": 4}}
        (root / "shards.yaml").write_text(yaml.safe_dump(overlay))
        env = {"PYTHONPATH": str(root / "src"), "OPENAI_API_KEY": key}
        proc, out = _snakemake(["results/smoke/scores.jsonl", "--profile", "tests/slurm/profile",
                                "--configfile", "config/smoke.yaml", "shards.yaml"],
                               root, 500, tmp_path / "run.log", env=env, background=True)
        try:
            cancelled = _wait_for(lambda: len(srv.paid_counts()) >= 10 and _running_job("rate_shard"), 240,
                                  "a rating shard paying", proc)
            subprocess.run(["scancel", cancelled], check=True, timeout=20)
        except BaseException:
            _stop(proc, out)
            raise
        log = _finished(proc, out, tmp_path / "run.log", 500)
        paid = srv.paid_counts()
        # The unsharded rating of the same records, by the library in this process.
        cfg = load(REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml", root / "shards.yaml")
        records = load_records(root / "results" / "smoke" / "alpaca_52k.json")
        monkeypatch.setenv("OPENAI_API_KEY", key)
        cfg["judges"]["fake"]["concurrency"] = 16  # a speed knob, not part of a judgement
        rate_records(records, cfg["judges"], cfg["rating"], tmp_path / "one_cache", tmp_path / "one.jsonl",
                     tmp_path / "one_cost.json", max_field_chars=cfg["data"]["max_field_chars"], progress=False)
    assert max(paid.values()) == 1 and len(paid) == len({(r["instruction"], r["input"], r["output"]) for r in alpaca})
    assert (root / "results" / "smoke" / "scores.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    shard_jobs = [j for j in slurm_jobs(run_id_of(log)).values() if rule_of(j) == "rate_shard"]
    by_state = collections.Counter(j["JobState"] for j in shard_jobs)
    assert by_state == {"COMPLETED": 4, "CANCELLED": 1}, [(j["JobId"], j["JobState"], j["Comment"]) for j in shard_jobs]
    shards = collections.Counter(_shard_of(j) for j in shard_jobs)
    again = _shard_of(slurm_jobs()[cancelled])
    assert shards == {s: 2 if s == again else 1 for s in ("0", "1", "2", "3")}, shards
    assert all(j["Partition"] == slurm_cluster.cpu_partition and j["JOB_GRES"] == "(null)" for j in shard_jobs)
