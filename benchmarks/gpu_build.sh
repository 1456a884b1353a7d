#!/usr/bin/env bash
# The demo generator's build on a GPU inside one device call, continued across calls.
#
#   benchmarks/gpu_build.sh [--device cuda|cpu] [--budget-s 480] [--out DIR] [--work DIR] [-- BUILD_ARGS...]
#
# Runs resources/build/build_demo_generator.py on the device (default BUILD_ARGS: --shipped, the shipped build 7's
# recipe: the 32 x 32 latent, ten UNet cycles, learning-rate restarts, offset noise) with --checkpoint-every 1500,
# one UNet cycle: besides the two checkpoints before the first
# UNet step, the build then checkpoints at the end of each cycle, where no optimizer state is needed, so a
# checkpoint stays the size of the generator (~20 MB). At --budget-s the build is stopped (SIGINT: it cancels after
# the current step) and its last checkpoint is what comes back.
#
# A checkpoint this script returned earlier is continued when its files are carried in .gpu-build/ (copy the
# returned build.tgz.part-* there and name .gpu-build in the call's carry; add --continue-from to nothing: the
# script does it). Output in --out (default $OUT when set, else /tmp/neurolens-gpu-build): build.tgz.part-aa, -ab, ...
# (15 MB each: a device call returns files of at most 16 MiB), build.json (the folder's train_state and recipe) and
# build.log. Put the parts together with `cat build.tgz.part-* | tar xz`: the folder build/, a checkpoint to continue
# (here with build_demo_generator.py --continue-from build, or on the device again) or the finished generator.
# Wheels: as gpu_check.sh (benchmarks/gpu_wheels.sh, carry .whl). Exit status: the build's (0 finished; 3 stopped
# at the budget, its checkpoint returned; else failed).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=cuda BUDGET=480
OUTDIR=${OUT:-/tmp/neurolens-gpu-build}
WORK=""
BUILD_ARGS=(--shipped)
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --out) OUTDIR=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --budget-s) BUDGET=$2; shift 2 ;;
        --) shift; BUILD_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/neurolens-gpu-build-work.XXXXXX)}
LOGS=$WORK/logs
mkdir -p "$OUTDIR" "$LOGS"
T0=$(date +%s)
. "$ROOT/benchmarks/gpu_env.sh"

BUILD=$WORK/build
CONTINUE=()
if ls "$ROOT"/.gpu-build/build.tgz.part-* >/dev/null 2>&1; then
    rm -rf "$BUILD"
    cat "$ROOT"/.gpu-build/build.tgz.part-* | tar xz -C "$WORK" || { echo "gpu_build.sh: .gpu-build: the carried parts do not unpack (all of build.tgz.part-* expected)" >&2; exit 2; }
    CONTINUE=(--continue-from "$BUILD")
    echo "continuing the carried checkpoint: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_state"])' "$BUILD/generator.json")"
fi

left=$(( BUDGET - ($(date +%s) - T0) ))
set -o pipefail
timeout -s INT --kill-after=30 "$left" "$PY" "$ROOT/resources/build/build_demo_generator.py" --out "$BUILD" \
    "${CONTINUE[@]}" --device "$DEVICE" --checkpoint-every 1500 "${BUILD_ARGS[@]}" 2>&1 | tee "$OUTDIR/build.log"
rc=$?
[ $rc -eq 124 ] && rc=3  # stopped at the budget (timeout's status after the INT it sent)

if [ -f "$BUILD/generator.json" ]; then
    rm -f "$OUTDIR"/build.tgz.part-*
    tar czf - -C "$WORK" build | split -b 15m - "$OUTDIR/build.tgz.part-"
    "$PY" - "$BUILD/generator.json" "$OUTDIR/build.json" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
info = {"train_state": meta.get("train_state"), "recipe": meta.get("recipe"), "config": meta.get("config"),
        "built": meta.get("built"), "elapsed_s": int(sys.argv[3])}
json.dump(info, open(sys.argv[2], "w"), indent=2)
print("build folder:", info["train_state"], "after", info["elapsed_s"], "s")
EOF
else
    echo "no checkpoint yet: the budget ended before the first one (after the VAE stage)"
fi
exit $rc
