"""The default workflow through the SLURM profile on a real single-node SLURM cluster.

tests/slurm/start_local_slurm.sh installs slurm-wlm, slurmdbd, munge and mariadb-server
from Debian packages and starts the daemons (accounting included: the executor plugin
reads job states with `sacct`); this module runs the default workflow through
profiles/slurm, checks that every job that is not a local rule went through sbatch and
completed in SLURM's accounting, and that the results equal those of a local run of the
same workflow. It targets one replicate unit's main results (every method's selection and
evaluation of the first training seed: training, feature extraction in parts, ODIN's
network jobs, sensitivities, selection and evaluation), about a quarter of the default
DAG: each sbatch job starts a fresh Python and Snakemake, and the whole per-seed DAG
through a 2-core node took over 30 min in CI, where the rest of the suite takes 15. Everything started is stopped again (tests/slurm/stop_local_slurm.sh,
by recorded process id), also when pytest is killed with SIGTERM, and a cluster left by
a run killed with SIGKILL is found and stopped by the next run (tests/slurm_cleanup.py,
tested here without SLURM).

The cluster test needs root and apt-get (or SLURM already installed) and is skipped with
the reason otherwise; it is marked `slurm`. The other tests here check, without SLURM,
that the profile renders the requests it documents from the environment, that it names
only rules the workflow has and covers every GPU rule, and the arithmetic of
profiles/slurm/resources_from_benchmarks.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm_cleanup import OWNER_FILE, leftover_cluster, record_owner, stop_on_signal
from workflow_helpers import DEFAULT, REPO, snakemake_command

START = REPO / "tests" / "slurm" / "start_local_slurm.sh"
STOP = REPO / "tests" / "slurm" / "stop_local_slurm.sh"
PROFILE = REPO / "profiles" / "slurm"
# The default config: its network jobs go through sbatch; its CPU steps on cached arrays
# run in the Snakemake process (config resources.local_cpu_jobs), as they should on a
# cluster at this scale.
CONFIG = DEFAULT
START_TIMEOUT_S = 600
# one replicate unit's main results through sbatch (see the module docstring)
SLURM_RUN_TIMEOUT_S = 1200
TEST_TIMEOUT_S = START_TIMEOUT_S + SLURM_RUN_TIMEOUT_S + 1500

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def _snakemake(workdir: Path, *args: str, env: dict, timeout: int) -> str:
    """Run the repo's workflow with outputs in ``workdir``; return stdout + stderr."""
    cmd = snakemake_command(workdir, *args, configfile=CONFIG)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "PYTHONHASHSEED": "0"},
        cwd=workdir,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{log[-10000:]}"
        )
    return log


def _skip_reason() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to install and start SLURM daemons"
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        return "neither SLURM (sbatch) nor apt-get to install it is available"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[workflow]')"
    return None


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Start (or reuse) the local cluster; yield the environment for Snakemake."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    state_dir = os.environ.get("OPNP_SLURM_DIR", "/tmp/opnp-slurm")
    env = {**os.environ, "OPNP_SLURM_DIR": state_dir}
    leftovers = leftover_cluster(state_dir)
    if leftovers:  # an earlier run of this test was killed before it could stop them
        warnings.warn(
            f"stopping a SLURM cluster left running in {state_dir} by an earlier test run "
            f"that was killed: {leftovers}",
            stacklevel=1,
        )
        subprocess.run(["bash", str(STOP)], env=env, timeout=180)
    try:
        proc = subprocess.run(
            ["bash", str(START)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(STOP)], env=env, timeout=120)
        pytest.fail(f"{START} did not finish within {START_TIMEOUT_S}s")
    if proc.returncode != 0:
        subprocess.run(["bash", str(STOP)], env=env, timeout=120)
        pytest.fail(f"{START} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}")
    # A cluster someone started before this test is theirs: leave it running.
    started_here = "already running" not in proc.stderr
    exports = dict(re.findall(r"^export (\w+)=(.*)$", proc.stdout, flags=re.M))
    env.update(exports)
    env.update(
        OPNP_SLURM_PARTITION=exports["SLURM_PARTITION"],
        # The test node has no GPU and ~2 cores / ~20 GB; the default benchmark is
        # ~1000x smaller than ImageNet, for which the profile's requests are sized.
        OPNP_SLURM_GPUS_PER_JOB="0",
        OPNP_SLURM_SCALE="0.1",
    )
    if not started_here:
        yield env
        return

    def stop() -> None:
        subprocess.run(["bash", str(STOP)], env=env, timeout=180)
        (Path(state_dir) / OWNER_FILE).unlink(missing_ok=True)

    record_owner(state_dir)
    # Stopped when the test ends and also when pytest gets SIGTERM / SIGHUP (a timeout
    # kill), where a plain `finally` would not run (tests/slurm_cleanup.py).
    with stop_on_signal(stop):
        yield env


def _unit_targets() -> list[str]:
    """The selection and evaluation results of every method on the first replicate unit
    (the first training seed), relative to the working directory."""
    from opnp.pipeline.replicates import replicate_unit

    config = yaml.safe_load(CONFIG.read_text())
    (model,) = config["models"]
    replicates = config["replicates"]
    unit = replicate_unit(model, replicates["seeds"][0], replicates["vary"])
    return [
        f"results/{config['benchmark']}/{stage}/{unit}/{method}.parquet"
        for stage in ("selection", "evaluation")
        for method in config["methods"]
    ]


def _job_rules(log: str) -> tuple[list[str], list[str]]:
    """Rules of the jobs a Snakemake log announces: (cluster jobs, local jobs).

    Snakemake prints `rule NAME:` for each job it hands to the executor and
    `localrule NAME:` for each job it runs itself (a dry run runs everything locally).
    """
    remote = re.findall(r"^rule (\w+):$", log, flags=re.M)
    local = re.findall(r"^localrule (\w+):$", log, flags=re.M)
    return remote, local


@pytest.mark.slurm
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_workflow_through_slurm_profile_matches_local_run(slurm_env, default_run, tmp_path):
    env = slurm_env
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()

    targets = _unit_targets()
    for target in targets:  # the names the local run wrote
        assert (default_run / target).is_file(), f"the local run has no {target}"
    planned = sum(map(len, _job_rules(_snakemake(slurm_dir, "-n", *targets, env=env, timeout=300))))

    log = _snakemake(
        slurm_dir,
        "--profile",
        str(PROFILE),
        # Poll SLURM every second instead of after 40 s (the plugin's default, meant
        # for busy clusters); jobs here take seconds.
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        "--retries",
        "0",
        "--slurm-keep-successful-logs",
        # targets last: after --configfile (which takes several values) they would be
        # read as config files
        *targets,
        env=env,
        timeout=SLURM_RUN_TIMEOUT_S,
    )
    remote, local = _job_rules(log)
    assert len(remote) + len(local) == planned, (
        f"the run announced {len(remote)} cluster and {len(local)} local jobs, "
        f"the dry run planned {planned}"
    )
    # Every job that runs the network went to SLURM; only CPU steps ran locally.
    rules = workflow_rules()
    gpu_rules = {name for name, text in rules.items() if re.search(r"\bgpu\s*=", text)}
    assert gpu_rules & set(remote), f"no network job was submitted: {sorted(set(remote))}"
    assert not gpu_rules & set(local), f"network jobs run locally: {gpu_rules & set(local)}"
    may_run_locally = snakefile_localrules() | {
        name for name, text in rules.items() if "localrule: LOCAL_CPU_JOBS" in text
    }
    assert set(local) <= may_run_locally, sorted(set(local) - may_run_locally)
    assert not set(remote) & may_run_locally, sorted(set(remote) & may_run_locally)
    submitted = {int(job): int(slurm_id) for job, slurm_id in SUBMITTED.findall(log)}
    assert len(submitted) == len(remote), (
        f"{len(submitted)} jobs went through sbatch, but {len(remote)} cluster jobs ran "
        f"(local rules: {sorted(set(local))})"
    )

    # SLURM's own accounting agrees: each submitted job exists and completed.
    ids = ",".join(str(i) for i in sorted(submitted.values()))
    sacct = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", ids],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    states = dict(line.split("|", 1) for line in sacct.stdout.split())
    assert set(states) == {str(i) for i in submitted.values()}, sacct.stdout
    failed = {i: s for i, s in states.items() if not s.startswith("COMPLETED|0:0")}
    assert not failed, f"SLURM jobs that did not complete cleanly: {failed}"

    # The same workflow run locally (the shared default_run) gives the same results: every
    # selection (chosen settings, validation scores) and evaluation (test metrics), whole.
    for target in targets:
        on_slurm = pd.read_parquet(slurm_dir / target)
        assert len(on_slurm) > 0, target
        pd.testing.assert_frame_equal(on_slurm, pd.read_parquet(default_run / target))


# ---------------------------------------------------------------- the profile, no SLURM


def render_profile(monkeypatch, **env) -> dict:
    """profile.yaml as Snakemake reads it, under the given OPNP_SLURM_* variables."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in [v for v in os.environ if v.startswith(("OPNP_SLURM_", "SBATCH_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(PROFILE / "profile.yaml") as handle:
        return ProfileConfigFileParser().parse(handle)


def rule_resources(profile: dict, rule: str) -> dict[str, str]:
    prefix = f"{rule}:"
    return dict(
        item[len(prefix) :].split("=", 1)
        for item in profile["set-resources"]
        if item.startswith(prefix)
    )


def workflow_rules() -> dict[str, str]:
    """Rule name -> source text of the rule, from workflow/rules/*.smk."""
    rules, derived = {}, {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        parts = re.split(r"^(?:rule|checkpoint) (\w+):$", text, flags=re.M)
        rules.update(zip(parts[1::2], parts[2::2], strict=True))
        # `use rule A as B with:` makes B a rule with A's directives unless overridden.
        derived.update(re.findall(r"^use rule (\w+) as (\w+) with:$", text, flags=re.M))
    for parent, child in derived.items():
        rules[child] = rules[parent]
    return rules


def snakefile_localrules() -> set[str]:
    """Rules of the Snakefile's `localrules:` directive (always run by Snakemake itself)."""
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", (REPO / "Snakefile").read_text(), re.M)
    return set(re.findall(r"\w+", block.group(1)))


def test_profile_reads_partition_account_and_gpus_from_the_environment(monkeypatch):
    pytest.importorskip("snakemake")
    profile = render_profile(
        monkeypatch,
        OPNP_SLURM_PARTITION="cpu-q",
        OPNP_SLURM_GPU_PARTITION="gpu-q",
        OPNP_SLURM_ACCOUNT="lab7",
        OPNP_SLURM_CPUS_PER_GPU="6",
        OPNP_SLURM_JOBS="12",
    )
    assert profile["executor"] == "slurm"
    assert profile["jobs"] == "12"
    assert "slurm_partition=cpu-q" in profile["default-resources"]
    assert "slurm_account=lab7" in profile["default-resources"]
    extract = rule_resources(profile, "extract_features")
    assert extract["gpu"] == "1"
    assert extract["cpus_per_gpu"] == "6"
    assert extract["slurm_partition"] == "gpu-q"
    assert "gpu" not in rule_resources(profile, "compute_sensitivity")


def test_profile_without_environment_names_no_partition_or_account(monkeypatch):
    pytest.importorskip("snakemake")
    profile = render_profile(monkeypatch)
    assert not any(r.startswith("slurm_") for r in profile["default-resources"])
    extract = rule_resources(profile, "extract_features")
    assert "slurm_partition" not in extract and extract["gpu"] == "1"
    # SLURM's own variables are the fallback.
    profile = render_profile(monkeypatch, SBATCH_PARTITION="p2", SBATCH_ACCOUNT="a2")
    assert {"slurm_partition=p2", "slurm_account=a2"} <= set(profile["default-resources"])


def test_profile_cpu_only_cluster_and_scale(monkeypatch):
    pytest.importorskip("snakemake")
    full = render_profile(monkeypatch)
    small = render_profile(monkeypatch, OPNP_SLURM_GPUS_PER_JOB="0", OPNP_SLURM_SCALE="0.1")
    assert "gpu" not in rule_resources(small, "extract_features")
    assert "cpus_per_gpu" not in rule_resources(small, "extract_features")
    # Requests are expressions of `attempt` (doubled on the retry); the floor scales.
    assert rule_resources(full, "extract_features")["mem_mb"] == "32000 * attempt"
    assert rule_resources(small, "extract_features")["mem_mb"] == "3200 * attempt"
    assert rule_resources(full, "train_model")["runtime"] == "1440 * attempt"
    assert rule_resources(small, "train_model")["runtime"] == "144 * attempt"


def test_profile_names_only_workflow_rules_and_covers_every_gpu_rule(monkeypatch):
    pytest.importorskip("snakemake")
    profile = render_profile(monkeypatch)
    rules = workflow_rules()
    in_profile = {item.split(":", 1)[0] for item in profile["set-resources"]}
    unknown = sorted(in_profile - set(rules))
    assert not unknown, f"profile sets resources of rules the workflow lacks: {unknown}"
    gpu_rules = {name for name, text in rules.items() if re.search(r"\bgpu\s*=", text)}
    assert gpu_rules, "the workflow declares no GPU rule"
    without_gpu = sorted(r for r in gpu_rules if "gpu" not in rule_resources(profile, r))
    assert not without_gpu, f"GPU rules without a GPU request in the profile: {without_gpu}"


def test_resources_from_benchmarks_sizes_requests(tmp_path):
    sys.path.insert(0, str(PROFILE))
    try:
        import resources_from_benchmarks as sizing
    finally:
        sys.path.remove(str(PROFILE))
    tsv = tmp_path / "job.tsv"
    tsv.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\n100.0\t0:01:40\t1000.5\t2000\n130.0\t0:02:10\t900.0\t2000\n"
    )
    assert sizing.read_benchmark(tsv) == (130.0, 1000.5)
    # 2 x 1000.5 MB = 2001 MB -> next multiple of 256 = 2048; 2 x 130 s -> 5 min floor.
    stats = {"max_s": 130.0, "max_rss_mb": 1000.5}
    assert sizing.request(stats, headroom=2.0, scale=1.0) == (2048, 5)
    # x100: 2 x 13,000 s = 433.3 min -> 434; 2 x 100,050 MB -> 200,192 MB.
    assert sizing.request(stats, headroom=2.0, scale=100.0) == (200192, 434)
    assert sizing.request({"max_s": 1.0, "max_rss_mb": 10.0}, 2.0, 1.0) == (512, 5)
    empty = tmp_path / "empty.tsv"
    empty.write_text("s\tmax_rss\n")
    with pytest.raises(ValueError, match="empty.tsv"):
        sizing.read_benchmark(empty)


# ------------------------------------------- cleanup when pytest is killed, no SLURM

# A stand-in for pytest holding the cluster fixture: it records a dummy "daemon" (a
# detached sleep, as the real daemons detach) as the start script would, enters
# stop_on_signal with a stop that kills the recorded pid (as stop_local_slurm.sh does),
# says it is ready and waits to be killed.
HOLDER = """
import os, signal, sys, time
from pathlib import Path
from slurm_cleanup import record_owner, stop_on_signal
base = Path(sys.argv[1])
def stop():
    pid = int((base / "pids" / "slurmd.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    with open(base / "stopped", "a") as handle:
        handle.write("stopped\\n")
record_owner(base)
with stop_on_signal(stop):
    print("ready", flush=True)
    time.sleep(120)
"""


def start_dummy_daemon(base: Path) -> subprocess.Popen:
    daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (base / "pids").mkdir(parents=True, exist_ok=True)
    (base / "pids" / "slurmd.pid").write_text(f"{daemon.pid}\n")
    return daemon


def run_holder(base: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(base)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline().strip() == "ready"
    return holder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_cluster_is_stopped_when_the_test_process_gets_sigterm(tmp_path, signum):
    daemon = start_dummy_daemon(tmp_path)
    try:
        holder = run_holder(tmp_path)
        holder.send_signal(signum)
        assert holder.wait(timeout=30) == -signum  # still dies of the signal
        assert daemon.wait(timeout=30) == -signal.SIGKILL  # the stop callback killed it
        assert (tmp_path / "stopped").read_text() == "stopped\n"  # once
    finally:  # a failed run must not leave its dummy daemon behind either
        daemon.kill()


def test_a_cluster_left_by_a_killed_run_is_detected(tmp_path):
    """SIGKILL cannot be caught: the daemons outlive the test, and the next run finds
    them through the owner file of the dead process; a cluster started by hand (no owner
    file) or one whose owner still runs is not a leftover."""
    daemon = start_dummy_daemon(tmp_path)
    try:
        assert leftover_cluster(tmp_path) == {}  # no owner: started by hand
        holder = run_holder(tmp_path)
        assert leftover_cluster(tmp_path) == {}  # its owner still runs
        holder.kill()
        holder.wait(timeout=30)
        assert not (tmp_path / "stopped").exists()
        assert leftover_cluster(tmp_path) == {"slurmd": daemon.pid}
        daemon.kill()
        daemon.wait(timeout=30)
        assert leftover_cluster(tmp_path) == {}  # nothing alive is left
    finally:
        daemon.kill()


def test_stop_on_signal_stops_once_on_normal_exit_and_on_an_error():
    calls = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signal(lambda: calls.append(1)):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert calls == [1] and signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(RuntimeError), stop_on_signal(lambda: calls.append(2)):
        raise RuntimeError("test failed")
    assert calls == [1, 2] and signal.getsignal(signal.SIGTERM) is before
