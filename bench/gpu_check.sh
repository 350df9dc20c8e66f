#!/usr/bin/env bash
# The GPU checks a lent machine runs, in under 9 minutes on one H100 (each part has its own time limit, and a part
# that fails or runs out of time is recorded, never stopping the others):
#   1. bench/gpu_bench.py: the full-size geometry (EVA ViT-g, Q-Former, 7B Llama; random bf16) on one GPU;
#   1b. the same geometry loaded in 4-bit NF4 (bench/gpu_bench.py --quantization 4bit): peak GPU memory of inference
#      and of Q-Former training steps, against the targets (within 8 GiB and 12 GiB);
#   2. with several GPUs, one 7B-geometry training setting on all of them, DDP and FSDP-2 (torchrun
#      bench/gpu_bench.py --distributed ...); with one GPU this part is skipped and the JSON says so;
#   3. one train.py step under configs/deepspeed_zero2.yaml on every GPU (tiny model), when deepspeed imports
#      (`pip install -e .[deepspeed]`); without a GPU the JSON says where DeepSpeed is checked instead.
# Results: bench/results/gpu_check-<device>-<UTC date>.json (parts and logs beside it, under the same name), with a
# copy of the JSON in $OUT when it is set.
#   bash bench/gpu_check.sh
# On a machine without a GPU, GPU_CHECK_TINY=1 runs the same parts on the tiny geometry and GPU_CHECK_NPROC=2 stands
# for two GPUs (CPU processes, gloo), GPU_CHECK_RESULTS=<folder> writes elsewhere: that is how the script itself is
# checked (tests/test_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

TINY=()
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    TINY=(--tiny --steps 1)  # the project is installed where the script is checked
else
    # Nothing outside the machine may be reachable: no retries, and the extra is dropped when it cannot install.
    timeout 45 python -m pip install --quiet --retries 0 --timeout 10 -e ".[deepspeed]" > /dev/null 2>&1 \
        || timeout 45 python -m pip install --quiet --retries 0 --timeout 10 -e . 2>&1 | tail -2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

NGPU="${GPU_CHECK_NPROC:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}"
NGPU="${NGPU:-0}"
DEVICE="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
DEVICE="${DEVICE:-cpu}"
DEVICE_SLUG="$(echo "$DEVICE" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//')"
STAMP="$(date -u +%Y%m%d-%H%M)"
RESULTS="${GPU_CHECK_RESULTS:-bench/results}"
NAME="gpu_check-${DEVICE_SLUG}-${STAMP}"
PARTS="$RESULTS/$NAME"
mkdir -p "$PARTS"
# Seconds per part: one GPU gives the single-GPU benchmark most of the time. The 4-bit part writes ~16 GB of random
# bf16 weights to local disk and loads them twice.
if [ "$NGPU" -ge 2 ]; then SINGLE_S=140; DIST_S=60; else SINGLE_S=200; DIST_S=0; fi
QUANT_S=150
# The tiny check runs on CPU cores that may be shared: time enough for a loaded machine.
[ ${#TINY[@]} -gt 0 ] && DIST_S=240 && QUANT_S=240
# Worst case on one GPU: 2 x 45 (install) + 200 + 150 + 90 = 530 s; on several, 90 + 140 + 2 x 60 + 150 + 90 = 590 s.
DEEPSPEED_S=90

# run_part NAME SECONDS COMMAND...: runs with a time limit, logs to $PARTS/NAME.log, records the exit status
run_part() {
    local name=$1 seconds=$2
    shift 2
    local t0=$(date +%s)
    timeout --kill-after=10 "$seconds" "$@" > "$PARTS/$name.log" 2>&1
    local status=$?
    echo "{\"exit_status\": $status, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $seconds}" \
        > "$PARTS/$name.status"
    tail -n 3 "$PARTS/$name.log"
    return 0
}

# ---- 1. one GPU
run_part single "$SINGLE_S" python bench/gpu_bench.py "${TINY[@]}" --output "$PARTS/single.json"

# ---- 1b. one GPU, the model in 4-bit NF4: inference and Q-Former training, batch 1 (the targets) and 8
run_part single_4bit "$QUANT_S" python bench/gpu_bench.py "${TINY[@]}" --quantization 4bit --batch_sizes 1,8 \
    --output "$PARTS/single_4bit.json"

# ---- 2. several GPUs: DDP and FSDP-2, batch 8 per GPU with gradient checkpointing
if [ "$NGPU" -ge 2 ]; then
    for mode in ddp fsdp; do
        run_part "$mode" "$DIST_S" python -m torch.distributed.run --standalone --nproc_per_node "$NGPU" \
            bench/gpu_bench.py "${TINY[@]}" --distributed "$mode" --batch_sizes 8 --steps 3 \
            --output "$PARTS/$mode.json"
    done
fi

# ---- 3. DeepSpeed ZeRO-2: one train.py step on the tiny model
if [ "$DEVICE" = cpu ]; then
    # accelerate gives DeepSpeed no process group without a GPU; the tests train under ZeRO-2 on CPU instead.
    echo "no GPU: DeepSpeed on CPU is checked by tests/test_training_distributed.py" > "$PARTS/deepspeed_skip.log"
elif python -c "import deepspeed" > "$PARTS/deepspeed_import.log" 2>&1; then
    run_part deepspeed "$DEEPSPEED_S" bash -c '
        set -e
        python -c "
import sys
from dataset_builder.build import BuildOptions, run_build
from dataset_builder.synthetic import write_synthetic_emoset
from modeling_emovit.tiny import save_tiny_emovit
work = sys.argv[1]
save_tiny_emovit(work + \"/tiny\", seed=0)
write_synthetic_emoset(work + \"/emoset\", images_per_class=4, seed=0)
run_build(BuildOptions(emoset_root=work + \"/emoset\", output_dir=work + \"/instructions\", llm_backend=\"template\",
                       types=(\"categorical\",), per_class={\"categorical\": 2}, captioner=\"none\", seed=0,
                       show_progress=False))
" "$0"
        accelerate launch --config_file configs/deepspeed_zero2.yaml --num_processes "$1" train.py \
            --model_name_or_path "$0/tiny" --dataset "$0/instructions" --output_dir "$0/run" --types categorical \
            --max_steps 1 --per_device_train_batch_size 2 --bf16 --eval_strategy no --test_split none \
            --report_to none --save_strategy no --dataloader_num_workers 0
        test -f "$0/run/model.safetensors"' "$(mktemp -d)" "$NGPU"
fi

# ---- one JSON of all parts
python - "$PARTS" "$RESULTS/$NAME.json" "$DEVICE" "$NGPU" "$STAMP" "$started" <<'EOF'
import json, os, sys, time
parts, output, device, ngpu, stamp, started = sys.argv[1:7]
ngpu = int(ngpu)

def load(name):
    status = os.path.join(parts, name + ".status")
    if not os.path.exists(status):
        return None
    part = json.load(open(status))
    part["passed"] = part["exit_status"] == 0
    if part["exit_status"] in (124, 137):
        part["error"] = f"ran past its {part['limit_s']} s limit"
    elif not part["passed"]:
        lines = [line.strip() for line in open(os.path.join(parts, name + ".log"), errors="replace") if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        part["error"] = (errors or lines or ["no output"])[-1][:500]
    results = os.path.join(parts, name + ".json")
    if os.path.exists(results):  # what was measured, also when the part was cut short
        part["results"] = json.load(open(results))
    part["log"] = os.path.join(parts, name + ".log")
    return part

report = {"device": device, "gpu_count": ngpu, "date_utc": stamp, "single_gpu": load("single"),
          "single_gpu_4bit": load("single_4bit")}
if ngpu >= 2:
    report["multi_gpu"] = {"ddp": load("ddp"), "fsdp": load("fsdp")}
else:
    report["multi_gpu"] = {"skipped": f"{ngpu} GPU(s) on this machine; the DDP/FSDP step needs at least 2"}
deepspeed = load("deepspeed")
if deepspeed is None and os.path.exists(os.path.join(parts, "deepspeed_skip.log")):
    deepspeed = {"skipped": open(os.path.join(parts, "deepspeed_skip.log")).read().strip()}
elif deepspeed is None:
    reason = open(os.path.join(parts, "deepspeed_import.log"), errors="replace").read().strip().splitlines()
    deepspeed = {"skipped": "deepspeed does not import (pip install -e .[deepspeed]): "
                            + (reason[-1][:300] if reason else "no message")}
report["deepspeed_zero2"] = deepspeed
report["total_s"] = round(time.time() - int(started))
with open(output + ".tmp", "w") as f:
    json.dump(report, f, indent=1)
os.replace(output + ".tmp", output)
print(json.dumps({k: v for k, v in report.items() if k not in ("single_gpu", "single_gpu_4bit")}, indent=1))
four_bit = report["single_gpu_4bit"] or {}
print("4-bit targets:", json.dumps(four_bit.get("results", {}).get("targets", four_bit.get("error"))))
print(f"wrote {output}")
EOF
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$RESULTS/$NAME.json" "$OUT/" && cp -r "$PARTS" "$OUT/" || true
fi
