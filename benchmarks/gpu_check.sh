#!/usr/bin/env bash
# The GPU check: the whole CLI path on one device, then the GPU benchmarks, with one summary at the end.
#
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR] [--work DIR] [--budget-s 450]
#
# Steps (each its own process, its log kept; a failing step does not stop the ones that do not depend on it):
#   env          python, torch, CUDA, the GPU; imports of diffusers/peft/transformers
#   demo         neurolens demo create
#   train-*      every demo preset: demo-ridge, demo-mlp (bf16 on CUDA), demo-moe, demo-mbm
#   finetune-*   the demo generator on the MoE run (timestep router); the demo generator + LoRA + --joint-encoder on
#                the MLP run; an SD-1.5-size random-weight folder (benchmarks/make_sd15_folder.py) + LoRA rank 8
#                on the ridge run (bf16: fp32 LoRA weights under autocast)
#   reconstruct-* the demo test set (100 images x 4 samples, 25 steps; timed in-process: goal <= 5 s on a GPU) and
#                 8 images through the SD-1.5-size decoder
#   evaluate     neurolens evaluate on the demo reconstructions
#   pytest-gpu   the tests marked gpu (skipped without CUDA)
#   bench-*      bench_trainer (backbone step vs its memory-bound limit), bench_sampling (SD-1.5 size vs diffusers;
#                torch.compile reduce-overhead at 256x1 while time is left)
# --quick (for a CPU run): 1 epoch per preset, a tiny SD-layout folder, short fine-tunings, 2 samples x 10 steps.
# --budget-s: the whole check ends within this many seconds (default 450; the device call's limit is 8 minutes): a
#   step still running then is stopped ("stopped (time budget)"), later steps are skipped, the summary is written.
# Output in --out (default $OUT when set, else /tmp/neurolens-gpu-check): summary.txt, summary.json, logs.tgz.
# Exit status: 0 when every step that ran passed, 1 otherwise.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=cuda QUICK=0 BUDGET=450
OUTDIR=${OUT:-/tmp/neurolens-gpu-check}
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --out) OUTDIR=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --budget-s) BUDGET=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/neurolens-gpu-check-work.XXXXXX)}
LOGS=$WORK/logs
mkdir -p "$OUTDIR" "$LOGS" "$WORK/results"
T0=$(date +%s)

. "$ROOT/benchmarks/gpu_env.sh"
export NEUROLENS_BENCH_RESULTS="$WORK/results"
NL=("$PY" -m engine.cli.main)

: > "$WORK/steps.tsv"
FAILED=0
step() {  # step NAME COMMAND...: run it (unless over budget), log it, record status and seconds
    local name=$1; shift
    local left=$(( BUDGET - ($(date +%s) - T0) ))
    if [ "$left" -lt 10 ]; then
        printf '%s\tskipped (time budget)\t0\n' "$name" >> "$WORK/steps.tsv"; return 1
    fi
    local start; start=$(date +%s%N)
    echo "[$(date -u +%H:%M:%S)] $name: $*" | tee -a "$LOGS/commands.log"
    timeout --kill-after=5 "$left" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "(stopped at the time budget)" >> "$LOGS/$name.log"
    local tenths=$(( ($(date +%s%N) - start) / 100000000 ))
    local secs="$((tenths / 10)).$((tenths % 10))"
    if [ $rc -eq 0 ]; then status=ok
    elif [ $rc -eq 124 ]; then status="stopped (time budget)"; FAILED=1
    else status="FAILED (exit $rc)"; FAILED=1; fi
    printf '%s\t%s\t%.1f\n' "$name" "$status" "$secs" >> "$WORK/steps.tsv"
    echo "    -> $status in ${secs%.*} s"
    return $rc
}

if [ "$QUICK" = 1 ]; then
    EPOCHS=(--epochs 1); FT_STEPS=(--max-steps 20); SD_SIZE=tiny; SAMPLES=2; STEPS=10
else
    EPOCHS=(); FT_STEPS=(); SD_SIZE=full; SAMPLES=4; STEPS=25
fi
BF16=(); [ "$DEVICE" != cpu ] && BF16=(--precision bf16)
S=$WORK/demo-subject

step env "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, round(p.total_memory / 2**30, 1), "GiB")
for name in ("diffusers", "transformers", "peft", "accelerate", "safetensors", "nibabel", "nilearn", "h5py"):
    m = importlib.import_module(name)
    print(name, getattr(m, "__version__", "?"))
EOF
step demo "${NL[@]}" demo create "$S"
for preset in demo-ridge demo-mlp demo-moe demo-mbm; do
    extra=(); [ "$preset" = demo-mlp ] && extra=("${BF16[@]}")
    step "train-$preset" "${NL[@]}" train --data "$S" --preset "$preset" --out "$WORK/runs/$preset" \
        --device "$DEVICE" "${EPOCHS[@]}" "${extra[@]}"
done
step finetune-demo-moe "${NL[@]}" finetune "$WORK/runs/demo-moe" --generator demo --device "$DEVICE" \
    "${FT_STEPS[@]}"
step finetune-demo-mlp-joint-lora "${NL[@]}" finetune "$WORK/runs/demo-mlp" --generator demo --device "$DEVICE" \
    --joint-encoder --lora-rank 4 --max-steps "${FT_STEPS[1]:-100}"
step make-sd15-folder "$PY" "$ROOT/benchmarks/make_sd15_folder.py" "$WORK/sd15-$SD_SIZE" --size "$SD_SIZE"
SD_DTYPE=bf16; [ "$DEVICE" = cpu ] && SD_DTYPE=fp32
step finetune-sd15-lora "${NL[@]}" finetune "$WORK/runs/demo-ridge" --generator "$WORK/sd15-$SD_SIZE" \
    --device "$DEVICE" --dtype "$SD_DTYPE" --lora-rank 8 --max-steps "${FT_STEPS[1]:-40}" --epochs 1
step reconstruct-demo "$PY" "$ROOT/benchmarks/gpu_check.py" time-reconstruct "$WORK/runs/demo-moe" \
    "$WORK/recon-demo" --device "$DEVICE" --samples "$SAMPLES" --steps "$STEPS"
TRIALS=$("$PY" "$ROOT/benchmarks/gpu_check.py" test-trials "$S" 8 2>/dev/null)
step reconstruct-sd15 "${NL[@]}" reconstruct "$WORK/runs/demo-ridge" --out "$WORK/recon-sd15" --device "$DEVICE" \
    --samples 2 --steps 20 --trials "${TRIALS:-0}"
step evaluate "${NL[@]}" evaluate "$WORK/recon-demo" --json
if [ "$DEVICE" != cpu ]; then
    step pytest-gpu "$PY" -m pytest -q -m gpu -p no:cacheprovider "$ROOT/tests/engine/test_device_rules.py" \
        "$ROOT/tests/engine/recon/test_finetune_device.py"
fi
step bench-trainer "$PY" "$ROOT/benchmarks/bench_trainer.py" --gpu-only
if [ "$DEVICE" = cpu ]; then
    step bench-sampling "$PY" "$ROOT/benchmarks/bench_sampling.py" --device cpu --repeats 3 \
        $([ "$QUICK" = 1 ] && echo --quick)
else
    step bench-sampling "$PY" "$ROOT/benchmarks/bench_sampling.py" --skip-cpu --repeats 3 \
        --configs 256x1,512x16,256x16,512x1
    mv "$WORK/results/bench_sampling.json" "$WORK/results/bench_sampling_eager.json" 2>/dev/null
    # torch.compile (CUDA graphs) last: its first calls compile for minutes; the budget stops it in time.
    step bench-sampling-compile "$PY" "$ROOT/benchmarks/bench_sampling.py" --skip-cpu --repeats 3 \
        --configs 256x1,512x16 --compile reduce-overhead --compile-configs 256x1,512x16 --compile-only
fi

"$PY" "$ROOT/benchmarks/gpu_check.py" summary "$WORK" --device "$DEVICE" --elapsed "$(( $(date +%s) - T0 ))" \
    --out "$OUTDIR"
tar -czf "$OUTDIR/logs.tgz" -C "$WORK" logs results steps.tsv 2>/dev/null
[ "$FAILED" = 0 ]
