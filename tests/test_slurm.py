"""The project's own slurm/ scripts on a real one-node SLURM cluster (munge, slurmctld, slurmd on this
machine, started by slurm/local/start-local-slurm.sh), with 2 CPU tasks and gloo in place of GPUs.

Checks: the 2-task DDP job trains and finishes; a job requeued mid-run from outside (`scontrol
requeue`: SIGTERM, save, requeue) and a job that hits a short time limit (`--signal=USR1@40`: save,
requeue itself; its requeued run then gets a longer limit) both end with exactly the parameters of the uninterrupted job; an array job runs its
members with their own seeds and folders. Needs root (to start the daemons); CI runs as root.
"""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_same_training_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/toy/bigan_ring.yaml"
ITERATIONS = 1000  # 35 to 80 s on 2 CPU tasks here: a signal 12 to 30 s into the job arrives mid-run
CPU_TASKS = ["--gres=none", "--cpus-per-task=1"]  # the scripts ask for GPUs; these machines have none
TRAIN = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.limit_train_batches",  # 2 epochs
         str(ITERATIONS // 2), "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "40"]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM cluster needs root (CI runs as root)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("no SLURM packages and no apt-get to install them")
    already_up = subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("is UP") > 0 \
        if shutil.which("scontrol") else False
    env = {**os.environ, "SLURM_PROCTRACK": "cgroup"}  # cgroup: a job's leftover processes die with it
    started = subprocess.run(["bash", str(REPO / "slurm/local/start-local-slurm.sh")], env=env, timeout=600,
                             capture_output=True, text=True)
    assert started.returncode == 0, f"the local SLURM cluster did not start:\n{started.stderr[-3000:]}"
    yield
    if not already_up:  # leave the machine as we found it
        subprocess.run(["bash", str(REPO / "slurm/local/stop-local-slurm.sh")], capture_output=True, timeout=300)


def sbatch(script: str, *args: str, options=(), out: Path, env=None) -> str:
    result = subprocess.run(["sbatch", "--parsable", f"--output={out}/slurm-%j.out", *options, f"slurm/{script}",
                             *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                            timeout=600)  # with --wait, sbatch returns when the job ends
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job(job_id: str) -> dict:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0])) if text.strip() else {}


def wait_for(job_id: str, timeout: float = 400) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job(job_id)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job(job_id)}")


def wait_until_training(log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and "gan_lightning: BiGAN (" in log.read_text(errors="replace"):  # RunSummary at fit start
            return
        time.sleep(0.5)
    raise AssertionError(f"training did not start in {timeout} s: {log.read_text(errors='replace')[-2000:]}")


def resumed_at(log: str) -> list[int]:
    """The iterations that the log's runs resumed at (RunSummary prints them)."""
    return [int(it) for it in re.findall(r"resumed     : at iteration (\d+)", log)]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def assert_same_training(a: dict, b: dict) -> None:
    assert a["gan_lightning"]["iteration"] == b["gan_lightning"]["iteration"] == ITERATIONS
    assert_same_training_state(a["state_dict"], b["state_dict"], a["optimizer_states"], b["optimizer_states"])


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


def test_two_task_ddp_job_trains_and_finishes(uninterrupted):
    assert uninterrupted["gan_lightning"]["iteration"] == ITERATIONS


def test_job_requeued_from_outside_resumes_exactly(uninterrupted, tmp_path):
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--run_dir", str(tmp_path / "run"), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=10"])
    log = tmp_path / f"slurm-{job_id}.out"
    wait_until_training(log)
    time.sleep(6)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    info = wait_for(job_id)
    text = log.read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, text[-3000:]
    # SIGTERM made the first run save mid-run (srun may drop the tasks' last lines while it is killed)
    assert resumed_at(text) and all(0 < it < ITERATIONS for it in resumed_at(text)), text[-3000:]
    assert_same_training(final_state(tmp_path / "run"), uninterrupted)


def test_job_at_its_time_limit_requeues_itself_and_resumes_exactly(uninterrupted, tmp_path):
    # A 1-minute limit with the warning 40 s ahead: SLURM signals the run ~12-30 s in (not on the dot).
    job_id = sbatch("train.sbatch", CONFIG, *TRAIN, "--run_dir", str(tmp_path / "run"), out=tmp_path,
                    options=[*CPU_TASKS, "--ntasks-per-node=2", "--time=1", "--signal=USR1@40"])
    deadline = time.time() + 300
    # Until the callback requeues the job (Restarts counts it), the job is waiting, running, or, for the moment
    # between `scontrol requeue` and the count going up, COMPLETING/REQUEUED; ending any other way fails here.
    while int((info := job(job_id)).get("Restarts", 0)) == 0:
        waiting = info.get("JobState") in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED")
        assert time.time() < deadline and waiting, info
        time.sleep(1)
    # Each run here spends ~10 s starting: give the requeued run the time to finish in one go.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True)
    info = wait_for(job_id)
    text = (tmp_path / f"slurm-{job_id}.out").read_text(errors="replace")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, text[-3000:]
    # every requeue came from the callback (SLURM itself would have ended the job at its limit) and resumed
    assert "SIGUSR1 received: saved" in text and f"requeueing SLURM job {job_id}" in text, text[-3000:]
    assert len(resumed_at(text)) == int(info["Restarts"]), text[-3000:]
    assert_same_training(final_state(tmp_path / "run"), uninterrupted)


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
