"""The project's own slurm/ scripts and `python -m gan_lightning submit` on real SLURM clusters on this machine:
a one-node cluster (munge, slurmctld, slurmd; slurm/local/start-local-slurm.sh) with 2 CPU tasks and gloo in
place of GPUs, and beside it a two-node one (two `slurmd -N` daemons with their own ports and spool folders, one
CPU and one fake GPU each; slurm/local/start-two-node-slurm.sh), reached with SLURM_CONF.

Checks: the 2-task DDP job trains and finishes; a job requeued mid-run from outside (`scontrol requeue`:
SIGTERM, save, requeue), a job that hits a short time limit (`--time=2` with the script's own `USR1@90`: save,
requeue itself; its requeued run then gets a longer limit) and a job whose warning arrives while it validates
all end with exactly the parameters of the uninterrupted job; an array job runs its members with their own seeds
and folders. On two nodes: multinode.sbatch requeued from outside, and `submit`'s own command for two nodes
hitting its time limit, end with identical parameters on both ranks, equal to the one-node job's (the same world
size). Needs root (to start the daemons); CI runs as root.

The callbacks RankParameters and HoldValidation below run inside the jobs (`--trainer.callbacks+=tests.test_slurm.
...`; the jobs run in the repository's root).
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers import assert_same_training_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/toy/bigan_ring.yaml"
ITERATIONS = 1000  # 35 to 80 s on 2 CPU tasks here: a time limit's warning 0 to 30 s into the job comes before the end
CPU_TASKS = ["--gres=none", "--cpus-per-task=1"]  # the scripts ask for GPUs; these machines have none
TRAIN = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.limit_train_batches",  # 2 epochs
         str(ITERATIONS // 2), "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "40"]
TWO_NODES = ["twonode1", "twonode2"]  # slurm/local/start-two-node-slurm.sh
TWO_NODE_CONF = "/etc/slurm/two-node/slurm.conf"
RANK_PARAMETERS = ["--trainer.callbacks+=tests.test_slurm.RankParameters"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE")


# --- callbacks that run inside the jobs ------------------------------------------------------------------------

class RankParameters(L.Callback):
    """At the end of fit, every rank saves what it holds: ``<run>/ranks/rank<R>.pt`` with its parameters, its
    whole state (with buffers), its optimizers' state, its iteration and the node it ran on."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(trainer.default_root_dir) / "ranks"
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"node": os.environ.get("SLURMD_NODENAME"), "world_size": trainer.world_size,
                    "iteration": pl_module.iteration,
                    "parameters": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                    "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                    "optimizer_states": [opt.state_dict() for opt in trainer.optimizers]},
                   out / f"rank{trainer.global_rank}.pt")


class HoldValidation(L.Callback):
    """A slow measuring callback (ImageMetrics' 10,000 samples, say): in a job's first run, the validation at
    ``iteration`` holds for ``seconds`` at its end, between the files ``<run>/validating`` and ``<run>/validated``
    (written by rank 0), so that a test can signal the job while it validates."""

    def __init__(self, iteration: int = 1, seconds: float = 10.0):
        self.iteration, self.seconds = iteration, seconds

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        first_run = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
        if trainer.sanity_checking or not first_run or pl_module.iteration != self.iteration:
            return
        run = Path(trainer.default_root_dir)
        if trainer.is_global_zero:
            (run / "validating").write_text(str(pl_module.iteration))
        time.sleep(self.seconds)
        if trainer.is_global_zero:
            (run / "validated").write_text(str(pl_module.iteration))


# --- the clusters ----------------------------------------------------------------------------------------------

def cluster_up(env=None) -> bool:
    return shutil.which("scontrol") is not None and "is UP" in subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60).stdout


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM cluster needs root (CI runs as root)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("no SLURM packages and no apt-get to install them")
    already_up = cluster_up()
    env = {**os.environ, "SLURM_PROCTRACK": "cgroup"}  # cgroup: a job's leftover processes die with it
    started = subprocess.run(["bash", str(REPO / "slurm/local/start-local-slurm.sh")], env=env, timeout=600,
                             capture_output=True, text=True)
    assert started.returncode == 0, f"the local SLURM cluster did not start:\n{started.stderr[-3000:]}"
    yield
    if not already_up:  # leave the machine as we found it
        subprocess.run(["bash", str(REPO / "slurm/local/stop-local-slurm.sh")], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def two_nodes(cluster):
    """A second cluster beside the first, of two nodes on this machine: the environment that reaches it.
    (After `cluster`, so that it is stopped first: munge and the packages came with the one-node cluster.)"""
    env = {"SLURM_CONF": TWO_NODE_CONF}
    already_up = cluster_up(env)
    started = subprocess.run(["bash", str(REPO / "slurm/local/start-two-node-slurm.sh")], timeout=300,
                             capture_output=True, text=True)
    assert started.returncode == 0, f"the two-node SLURM cluster did not start:\n{started.stderr[-3000:]}"
    yield env
    if not already_up:
        subprocess.run(["bash", str(REPO / "slurm/local/stop-two-node-slurm.sh")], capture_output=True, timeout=300)


# --- jobs ------------------------------------------------------------------------------------------------------

SUBMITTED: list[tuple[str, dict]] = []  # (job id, environment) of this test's jobs


@pytest.fixture(autouse=True)
def cancel_leftover_jobs():
    """A test that fails while its job runs cancels it, so that the next test's job does not wait for it."""
    yield
    while SUBMITTED:
        job_id, env = SUBMITTED.pop()
        if shutil.which("scancel"):
            subprocess.run(["scancel", job_id], capture_output=True, env={**os.environ, **env}, timeout=60)


def sbatch(script: str, *args: str, options=(), out: Path, env=None) -> str:
    result = subprocess.run(["sbatch", "--parsable", f"--output={out}/slurm-%j.out", *options, f"slurm/{script}",
                             *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                            timeout=600)  # with --wait, sbatch returns when the job ends
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    SUBMITTED.append((job_id, env or {}))
    return job_id


def scontrol(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=60)


def job(job_id: str, env=None) -> dict:
    text = scontrol("show", "job", "-o", job_id, env=env).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0])) if text.strip() else {}


def wait_for(job_id: str, timeout: float = 400, env=None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job(job_id, env)
        if info.get("JobState") in ENDED:
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id], env={**os.environ, **(env or {})})
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job(job_id, env)}")


def wait_until(path: Path, job_id: str, log: Path, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log yet)"
        state = job(job_id).get("JobState")
        assert state not in ENDED, f"job {job_id} ended {state} before {path.name} appeared: {text}"
        assert time.time() < deadline, f"{path.name} did not appear in {timeout} s: {text}"
        time.sleep(0.2)


def wait_until_training(log: Path, job_id: str, timeout: float = 120, env=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and "gan_lightning: BiGAN (" in log.read_text(errors="replace"):  # RunSummary at fit start
            return
        state = job(job_id, env).get("JobState")
        text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        assert state not in ENDED, f"job {job_id} ended {state} before training: {text}"
        time.sleep(0.5)
    raise AssertionError(f"training did not start in {timeout} s: {log.read_text(errors='replace')[-2000:]}")


def wait_for_its_time_limit(job_id: str, log: Path, env=None) -> dict:
    """Until the run requeues itself on the time limit's warning (Restarts counts it); then a longer limit for
    the requeued run, which spends ~10 s starting, so that it finishes in one go. Until then the job is waiting,
    running, or, between `scontrol requeue` and the count going up, COMPLETING/REQUEUED; ending any other way
    (e.g. TIMEOUT: no requeue before the limit) fails here."""
    deadline = time.time() + 300
    while int((info := job(job_id, env)).get("Restarts", 0)) == 0:
        state = info.get("JobState")
        text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        assert state in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED"), \
            f"job {job_id} ended {state} without requeueing itself: {text}"
        assert time.time() < deadline, f"job {job_id} did not requeue itself in 300 s ({state}): {text}"
        time.sleep(1)
    updated = scontrol("update", f"JobId={job_id}", "TimeLimit=10", env=env)
    assert updated.returncode == 0, updated.stderr
    return wait_for(job_id, env=env)


def resumed_at(log: str) -> list[int]:
    """The iterations that the log's runs resumed at (RunSummary prints them)."""
    return [int(it) for it in re.findall(r"resumed     : at iteration (\d+)", log)]


def saved_at(log: str, signal_name: str) -> list[int]:
    """The iterations at which the log's runs saved on a signal (the Preemption callback prints them)."""
    return [int(it) for it in re.findall(rf"{signal_name} received: saved \S+ at iteration (\d+)", log)]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def assert_same_training(a: dict, b: dict) -> None:
    assert a["gan_lightning"]["iteration"] == b["gan_lightning"]["iteration"] == ITERATIONS
    assert_same_training_state(a["state_dict"], b["state_dict"], a["optimizer_states"], b["optimizer_states"])


def assert_ranks_identical(run_dir: Path, nodes: list[str]) -> None:
    """Both ranks ended at the last iteration, one on each of ``nodes``, holding exactly the same parameters and
    optimizer state, which are the checkpoint's. (Not the buffers: each rank's batch-norm running statistics
    follow its own batches, by design, until a validation hands rank 0's to all; the checkpoint holds rank 0's.)"""
    ranks = [torch.load(run_dir / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert sorted(rank["node"] for rank in ranks) == nodes, [rank["node"] for rank in ranks]
    assert [(rank["world_size"], rank["iteration"]) for rank in ranks] == [(2, ITERATIONS)] * 2
    assert ranks[0]["parameters"].keys() == ranks[1]["parameters"].keys() and ranks[0]["parameters"]
    assert_same_training_state(ranks[0]["parameters"], ranks[1]["parameters"], ranks[0]["optimizer_states"],
                               ranks[1]["optimizer_states"])
    assert_same_training_state(ranks[0]["state_dict"], final_state(run_dir)["state_dict"], [], [])


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The 2-task DDP job, start to finish."""
    out = tmp_path_factory.mktemp("uninterrupted")
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--run_dir", str(out / "run"), out=out,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=10"])
    info = wait_for(job_id)
    log = (out / f"slurm-{job_id}.out").read_text(errors="replace")
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert "2 task(s)" in log and f"finished at iteration {ITERATIONS}" in log
    return final_state(out / "run")


# --- one node --------------------------------------------------------------------------------------------------

def test_two_task_ddp_job_trains_and_finishes(uninterrupted):
    assert uninterrupted["gan_lightning"]["iteration"] == ITERATIONS


def test_job_requeued_from_outside_resumes_exactly(uninterrupted, tmp_path):
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--run_dir", str(tmp_path / "run"), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=10"])
    log = tmp_path / f"slurm-{job_id}.out"
    wait_until_training(log, job_id)
    time.sleep(6)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    info = wait_for(job_id)
    text = log.read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, text[-3000:]
    # SIGTERM made the first run save mid-run (srun may drop the tasks' last lines while it is killed)
    assert resumed_at(text) and all(0 < it < ITERATIONS for it in resumed_at(text)), text[-3000:]
    assert_same_training(final_state(tmp_path / "run"), uninterrupted)


def test_job_at_its_time_limit_requeues_itself_on_the_scripts_own_warning_and_resumes_exactly(uninterrupted,
                                                                                              tmp_path):
    # The script's own --signal=USR1@90 (not overridden) with the shortest limit that leaves it room, 2 minutes
    # (SLURM counts limits in minutes): SLURM sends the warning "up to 60 s earlier than specified" (man sbatch),
    # here 0 to 30 s into the job, mid-run or while it starts (held until the first iteration).
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--run_dir", str(tmp_path / "run"), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=2"])
    log = tmp_path / f"slurm-{job_id}.out"
    info = wait_for_its_time_limit(job_id, log)
    text = log.read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, text[-3000:]
    # every requeue came from the callback (SLURM itself would have ended the job at its limit) and resumed
    assert "SIGUSR1 received: saved" in text and f"requeueing SLURM job {job_id}" in text, text[-3000:]
    assert len(resumed_at(text)) == int(info["Restarts"]), text[-3000:]
    assert_same_training(final_state(tmp_path / "run"), uninterrupted)


def test_warning_that_arrives_while_the_job_validates_still_saves_and_resumes_exactly(uninterrupted, tmp_path):
    # Validation on (2 batches and the config's ModeCoverage at each epoch's end), the first epoch's held 10 s at
    # its end; SLURM's warning, sent the way --signal=USR1@N sends it (to every task of the job's steps), comes then.
    half = ITERATIONS // 2
    run = tmp_path / "run"
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--trainer.limit_val_batches", "2",
                    "--trainer.callbacks+=tests.test_slurm.HoldValidation", "--trainer.callbacks.iteration", str(half),
                    "--trainer.callbacks.seconds", "10", "--run_dir", str(run), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=10"])
    log = tmp_path / f"slurm-{job_id}.out"
    wait_until(run / "validating", job_id, log)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=60)
    assert not (run / "validated").exists(), "the signal came after the validation: no test"
    info = wait_for(job_id)
    text = log.read_text(errors="replace")
    assert (run / "validated").exists(), text[-3000:]  # the validation ran to its end
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, text[-3000:]
    # saved at the first iteration boundary after that validation (or at its end), requeued, resumed there
    assert len(saved_at(text, "SIGUSR1")) == 1 and saved_at(text, "SIGUSR1")[0] in (half, half + 1), text[-3000:]
    assert f"requeueing SLURM job {job_id}" in text and resumed_at(text) == saved_at(text, "SIGUSR1"), text[-3000:]
    assert_same_training(final_state(run), uninterrupted)


def test_array_job_runs_each_member_with_its_own_seed_and_folder(cluster, tmp_path):
    sbatch("array.sbatch", CONFIG, "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
                    "--trainer.limit_train_batches", "20", "--trainer.limit_val_batches", "0",
                    out=tmp_path, options=[*CPU_TASKS, "--array=0-1", "--ntasks-per-node=1", "--time=10", "--wait"],
                    env={"SEEDS": "3 4", "SWEEP": f"test-{tmp_path.name}"})
    sweep = REPO / "runs" / f"test-{tmp_path.name}"
    try:
        runs = {seed: final_state(sweep / f"bigan_ring-seed{seed}") for seed in (3, 4)}
    finally:
        shutil.rmtree(sweep, ignore_errors=True)
    for seed, saved in runs.items():
        assert saved["hyper_parameters"]["seed"] == seed and saved["gan_lightning"]["iteration"] == 20
    first = next(iter(runs[3]["state_dict"]))
    assert not torch.equal(runs[3]["state_dict"][first], runs[4]["state_dict"][first]), "seeds gave the same run"


# --- two nodes -------------------------------------------------------------------------------------------------

def test_multinode_job_requeued_from_outside_ends_with_identical_parameters_on_both_nodes(uninterrupted, two_nodes,
                                                                                         tmp_path):
    # multinode.sbatch's own --nodes=2, with one CPU task per node (in place of its 4 GPUs per node): world size 2,
    # as the one-node job's, so it must end exactly where that one ends.
    run = tmp_path / "run"
    job_id = sbatch("multinode.sbatch", CONFIG, *TRAIN, *RANK_PARAMETERS, "--run_dir", str(run), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=1", "--time=10"], env=two_nodes)
    log = tmp_path / f"slurm-{job_id}.out"
    wait_until_training(log, job_id, env=two_nodes)
    time.sleep(6)
    requeued = scontrol("requeue", job_id, env=two_nodes)
    assert requeued.returncode == 0, requeued.stderr
    info = wait_for(job_id, env=two_nodes)
    text = log.read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, text[-3000:]
    assert "on 2 node(s) x 1 task(s)" in text and info["NodeList"] == "twonode[1-2]", text[-3000:]
    assert resumed_at(text) and all(0 < it < ITERATIONS for it in resumed_at(text)), text[-3000:]
    assert_ranks_identical(run, TWO_NODES)
    assert_same_training(final_state(run), uninterrupted)


def test_submit_runs_its_command_on_two_nodes_which_requeues_itself_at_the_time_limit(uninterrupted, two_nodes,
                                                                                      tmp_path):
    # What a user types, one fake GPU per node; submit picks multinode.sbatch, whose own USR1@90 arrives 0 to
    # 30 s into the 2-minute job. Only the log's place is the test's (SBATCH_OUTPUT: the script's is the cwd).
    run = tmp_path / "run"
    submitted = subprocess.run(
        [sys.executable, "-m", "gan_lightning", "submit", "--config", CONFIG, "--nodes", "2", "--gpus-per-node", "1",
         "--cpus-per-task", "1", "--time", "2", "--", *TRAIN, *RANK_PARAMETERS, "--run_dir", str(run)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, **two_nodes, "SBATCH_OUTPUT": f"{tmp_path}/slurm-%j.out"})
    assert submitted.returncode == 0, submitted.stderr
    assert "slurm/multinode.sbatch" in submitted.stderr and "--gres=gpu:1" in submitted.stderr, submitted.stderr
    job_id = re.search(r"Submitted batch job (\d+)", submitted.stdout).group(1)
    SUBMITTED.append((job_id, two_nodes))
    log = tmp_path / f"slurm-{job_id}.out"
    info = wait_for_its_time_limit(job_id, log, env=two_nodes)
    text = log.read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, text[-3000:]
    assert "on 2 node(s) x 1 task(s)" in text and info["NodeList"] == "twonode[1-2]", text[-3000:]
    assert "SIGUSR1 received: saved" in text and f"requeueing SLURM job {job_id}" in text, text[-3000:]
    assert len(resumed_at(text)) == int(info["Restarts"]), text[-3000:]
    assert_ranks_identical(run, TWO_NODES)
    assert_same_training(final_state(run), uninterrupted)
