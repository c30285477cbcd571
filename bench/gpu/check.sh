#!/usr/bin/env bash
# One GPU session's checks, in one command (device time is scarce; see docs/training.md):
#   1. versions; 2. the 1B MFU bench (bench/bench_train_mfu.py) at a few micro-batch sizes;
#   3. `accelerate launch` with config/accelerate/fsdp.yaml (FSDP full_shard, bf16) of the
#      real training entry point, stopped by SIGUSR1 after a saved step, rerun (it must resume),
#      then the final HF directory generates the Vicuna set on the GPU.
# Needs ../shared's Alpaca + tokenizer under .devcarry/shared (a GPU box may not have ../shared)
# and the `gguf` wheel under .devcarry/whl when the image lacks it. Logs under $OUT (or /tmp/gpucheck).
set -uo pipefail
OUT=${OUT:-/tmp/gpucheck}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
SHARED=${SHARED:-.devcarry/shared}
STEPS=${BENCH_PART:-all}
if ! python3 -c "import gguf" 2>/dev/null && ls .devcarry/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devcarry/whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__); print(torch.cuda.get_device_name())"

if [[ $STEPS == all || $STEPS == mfu ]]; then
  for pd in ${MFU_PER_DEVICE:-8 16 32}; do
    echo "=== MFU bench, per-device $pd rows x 512 ==="
    python3 bench/bench_train_mfu.py --shared "$SHARED" --per-device "$pd" --steps "${MFU_STEPS:-30}" \
      ${MFU_ARGS:-} --out "$OUT/mfu_pd$pd.json" 2>"$OUT/mfu_pd$pd.err" | tail -3 \
      || { echo "bench failed:"; tail -30 "$OUT/mfu_pd$pd.err"; }
  done
fi

if [[ $STEPS == all || $STEPS == fsdp ]]; then
  echo "=== FSDP launch, SIGUSR1, resume ==="
  W=/tmp/gpucheck-run; rm -rf "$W"; mkdir -p "$W"
  python3 - "$SHARED" "$W/sample.json" <<'PY'
import json, random, sys
recs = json.load(open(f"{sys.argv[1]}/data/alpaca/alpaca_data.json"))
json.dump(random.Random(1).sample(recs, 3200), open(sys.argv[2], "w"))
PY
  launch() {
    python3 -m accelerate.commands.launch --config_file config/accelerate/fsdp.yaml --num_processes 1 \
      --num_machines 1 --main_process_port 29533 -m alpagasus.training \
      --config config/config.yaml --config bench/gpu/check.yaml --size gpucheck --variant check \
      --data "$W/sample.json" --output "$W/checkpoints/check-gpucheck" >>"$W/train.log" 2>&1
  }
  export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
  setsid bash -c "$(declare -f launch); W=$W launch" & pid=$!
  for _ in $(seq 600); do ls -d "$W"/checkpoints/.check-gpucheck.resume/step-00000008 >/dev/null 2>&1 && break; sleep 0.5; done
  sleep 3; kill -USR1 -- -$pid; wait $pid; echo "first run exit: $? (expect non-zero: saved and stopped)"
  ls "$W"/checkpoints/.check-gpucheck.resume/
  launch; echo "second run exit: $?"
  grep -E "resuming|got signal|Error|error" "$W/train.log" | head -20
  cp "$W/train.log" "$OUT/fsdp_train.log"
  python3 - "$W" "$SHARED" "$OUT" <<'PY'
import json, sys, time
from pathlib import Path
from alpagasus.testsets import write_test_set
from alpagasus.generation import generate_test_set
w, shared, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
ck = w / "checkpoints/check-gpucheck"
log = json.loads((ck / "train_log.json").read_text())
print("train_log:", {k: log[k] for k in ("device_count", "mixed_precision", "layout", "attn_implementation",
      "useful_token_fraction", "peak_memory_mb", "resumed_from_steps", "tokens_per_s") if k in log})
print("loss first/last:", log["steps"][0]["loss"], log["final_loss"], "steps", len(log["steps"]))
write_test_set("vicuna", w / "vicuna.jsonl", local_dir=f"{shared}/data/test_sets")
t = time.time()
generate_test_set(str(ck), str(w / "vicuna.jsonl"), str(w / "gen.jsonl"), testset="vicuna", model_name="check",
                  template=None, max_new_tokens=256, batch_size=16)
rows = [json.loads(l) for l in open(w / "gen.jsonl")]
print(f"generated {len(rows)} answers in {time.time() - t:.1f}s; first: {rows[0]['answer'][:80]!r}")
(out / "train_log.json").write_text(json.dumps(log, indent=1))
PY
fi
