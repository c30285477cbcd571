"""Stand-in for a resumable training run: N steps, a checkpoint after each one, resume on start.

usage: resumable.py CKPT_DIR N_STEPS STEP_SECONDS OUTPUT

What the real trainer must do on a cluster, in miniature:
- the checkpoint directory is NOT a declared output (Snakemake deletes the outputs of a killed
  job), it is written atomically, and a start resumes from it;
- SIGUSR1 (Slurm's `--signal=USR1@<seconds>` before the time limit) means: finish the current
  step, write a checkpoint, exit with EXIT_PREEMPTED so that Snakemake submits the job again
  (restart-times) and the next attempt resumes. SIGTERM (preemption, scancel, requeue) likewise.
Each start appends the step it resumed from to CKPT_DIR/starts.txt.
"""
import json
import os
import signal
import sys
import time

EXIT_PREEMPTED = 3

ckpt_dir, n_steps, step_s, output = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
os.makedirs(ckpt_dir, exist_ok=True)
state_path = os.path.join(ckpt_dir, "state.json")
stop_signal = []


def on_signal(signum, frame):
    stop_signal.append(signum)


signal.signal(signal.SIGUSR1, on_signal)
signal.signal(signal.SIGTERM, on_signal)


def save(step):
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"step": step}, f)
    os.replace(tmp, state_path)  # atomic: a kill never leaves a torn checkpoint


step = json.load(open(state_path))["step"] if os.path.exists(state_path) else 0
with open(os.path.join(ckpt_dir, "starts.txt"), "a") as f:
    f.write(f"start step={step} job={os.environ.get('SLURM_JOB_ID')}\n")
while step < n_steps:
    time.sleep(step_s)
    step += 1
    save(step)
    if stop_signal:
        with open(os.path.join(ckpt_dir, "starts.txt"), "a") as f:
            f.write(f"signal {stop_signal[0]} at step={step}: checkpointed, exiting\n")
        sys.exit(EXIT_PREEMPTED)
with open(output, "w") as f:
    f.write(open(os.path.join(ckpt_dir, "starts.txt")).read())
