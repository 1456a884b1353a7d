#!/usr/bin/env bash
# Download the pure-Python wheels a bare CUDA machine lacks for benchmarks/gpu_check.sh into .whl/ (gitignored).
#
# The GPU machines this project is lent (docs/benchmarks.md, "GPU check") have Python 3.12 with a CUDA torch,
# transformers, accelerate, peft, safetensors, h5py, scipy, scikit-image, scikit-learn, pandas and pytest, and no
# network. They lack diffusers, nibabel, nilearn and himalaya (and the Qt packages, which the CLI path does not need).
# This script fetches those as wheels, at the versions of the environment it runs in (so the GPU runs the code
# tested here), for CPython 3.12 on x86-64 Linux, without their dependencies (the machine has them), and lists what
# each wheel requires so a missing one can be added to EXTRA.
#
#   benchmarks/gpu_wheels.sh                 # versions of the current python's packages
#   PYTHON=/path/to/python benchmarks/gpu_wheels.sh
#   EXTRA="importlib-metadata==8.7.0" benchmarks/gpu_wheels.sh
#
# gpu_check.sh installs every wheel in .whl/ into a private folder (pip --target, --no-index) before it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=.whl
PACKAGES=(diffusers nibabel nilearn himalaya)

pins=()
for name in "${PACKAGES[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    pins+=("$name==$version")
done
# shellcheck disable=SC2206
pins+=(${EXTRA:-})

mkdir -p "$DEST"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" "${pins[@]}"

echo "wheels in $DEST/:"
for whl in "$DEST"/*.whl; do
    case "$whl" in
        *-none-any.whl) ;;
        *) echo "  note: $(basename "$whl") is not pure Python (built for one platform)" ;;
    esac
    echo "  $(basename "$whl")  $(du -k "$whl" | cut -f1) KiB"
    "$PYTHON" - "$whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:")]
print("    requires:", ", ".join(r for r in reqs if "extra ==" not in r) or "-")
EOF
done
echo "total: $(du -sh "$DEST" | cut -f1) (the tree and carried paths travel within 64 MiB)"
