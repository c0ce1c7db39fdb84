#!/usr/bin/env bash
# Shared by the batch scripts beside it: runs `python -m gan_lightning fit` on every task of the
# allocation with srun, one process per GPU, under PlayerDDPStrategy, resuming from the newest
# checkpoint (`--ckpt_path last`) when there is one. Not meant to be run by hand.
#   launch.sh CONFIG [LightningCLI options ...]
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:?launch.sh runs inside a SLURM job: sbatch slurm/train.sbatch CONFIG}"
if [ ! -d gan_lightning ] || [ ! -f pyproject.toml ]; then
  echo "gan_lightning: submit from the repository's root, e.g. 'sbatch slurm/train.sbatch configs/bigan.yaml'" >&2
  exit 2
fi
CONFIG=${1:?usage: sbatch slurm/train.sbatch CONFIG [LightningCLI options ...]}; shift
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1   # the log shows each line as it happens, also when SLURM kills the job
# One CPU thread per allocated core: more threads than cores (several tasks or jobs on one node)
# makes PyTorch's OpenMP threads spin against each other, many times slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
# The rendezvous port of rank 0, from this job's id: jobs sharing a node (array members) must not share
# it, and sbatch exports the submitting shell's MASTER_PORT, if any, to every job. GAN_LIGHTNING_PORT wins.
export MASTER_PORT=${GAN_LIGHTNING_PORT:-$(( 20000 + ${SLURM_JOB_ID:-0} % 40000 ))}
NODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / NODES ))}
echo "gan_lightning: job ${SLURM_JOB_ID} (run $(( ${SLURM_RESTART_COUNT:-0} + 1 ))) on ${NODES} node(s) x" \
     "${TASKS_PER_NODE} task(s) at $(date '+%F %T'): ${CONFIG} $*"
# Lightning reads rank and world size from SLURM's variables; --signal=USR1@T reaches every task, and
# the Preemption callback saves, requeues this job and exits at the next iteration boundary.
srun --kill-on-bad-exit=1 "$PYTHON" -m gan_lightning fit --config "$CONFIG" \
  --trainer.num_nodes "$NODES" --trainer.devices "$TASKS_PER_NODE" --trainer.strategy player_ddp \
  --ckpt_path last "$@"
