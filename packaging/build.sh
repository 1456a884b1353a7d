#!/usr/bin/env bash
# Build the one-folder NeuroLens bundle into dist/neurolens/ with PyInstaller, from a Python environment where
# NeuroLens is installed (see README). Usage: packaging/build.sh [--clean] [--gpu]
#   --clean  drop PyInstaller's cache first        --gpu  allow CUDA libraries (a build with a CUDA torch)
# PYTHON selects the interpreter (default: .venv/bin/python when it exists, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
clean=0 gpu=0
for a in "$@"; do
    case "$a" in
        --clean) clean=1 ;;
        --gpu) gpu=1 ;;
        *) echo "build.sh: unknown option $a (use --clean, --gpu)" >&2; exit 2 ;;
    esac
done
"$PYTHON" -c "import engine, neurolens_app" || { echo "build.sh: install NeuroLens into $PYTHON first (README)" >&2; exit 2; }
"$PYTHON" -m pip install -q "pyinstaller>=6.10"
args=(--noconfirm --distpath dist --workpath build/pyinstaller)
[ $clean = 1 ] && args+=(--clean)
"$PYTHON" -m PyInstaller "${args[@]}" packaging/neurolens.spec

# The menu entry and its installer travel with the bundle (install_desktop.sh finds them next to neurolens-app).
install -m 644 resources/desktop/neurolens.desktop dist/neurolens/neurolens.desktop
install -m 755 packaging/install_desktop.sh dist/neurolens/install_desktop.sh

# A CPU build must not carry CUDA libraries (they are GiBs): fail when a CUDA torch slipped into the environment.
cuda=$(find dist/neurolens \( -name 'libcu*' -o -name 'libnccl*' -o -name 'libnv*' -o -name 'libcudnn*' \
                              -o -path '*/nvidia/*' -o -name 'libtorch_cuda*' \) -print | head -5)
if [ -n "$cuda" ] && [ $gpu = 0 ]; then
    echo "build.sh: CUDA libraries in a CPU build (use a CPU torch, or pass --gpu):" >&2
    echo "$cuda" >&2
    exit 1
fi
du -sh dist/neurolens
echo "built dist/neurolens (run dist/neurolens/neurolens-app; smoke test: packaging/smoke_test.sh;" \
     "menu entry: dist/neurolens/install_desktop.sh)"
