#!/usr/bin/env bash
# Build the one-folder NeuroLens bundle into dist/neurolens/ with PyInstaller, from the current Python environment
# (install NeuroLens first: see README). Usage: packaging/build.sh [--clean]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q "pyinstaller>=6.10"
args=(--noconfirm --distpath dist --workpath build/pyinstaller)
[ "${1:-}" = "--clean" ] && args+=(--clean)
"$PY" -m PyInstaller "${args[@]}" packaging/neurolens.spec
install -m 644 resources/desktop/neurolens.desktop dist/neurolens/neurolens.desktop
du -sh dist/neurolens
echo "built dist/neurolens (run dist/neurolens/neurolens-app; smoke test: packaging/smoke_test.sh)"
