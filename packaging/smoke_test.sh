#!/usr/bin/env bash
# Start the frozen app in --screenshot mode on the demo subject, check the PNG, and print bundle size and start time as
# JSON. Usage: packaging/smoke_test.sh [dist/neurolens]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-dist/neurolens}
OUT=$(mktemp -d)
export NEUROLENS_CACHE_DIR="$OUT/cache" QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
t0=$(date +%s.%N)
"$BUNDLE/neurolens" --version
"$BUNDLE/neurolens-app" --screenshot "$OUT/shot.png"
t1=$(date +%s.%N)
python3 - "$OUT/shot.png" "$BUNDLE" "$t0" "$t1" <<'PY'
import json, os, struct, sys
png, bundle, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
with open(png, "rb") as f:
    head = f.read(24)
assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", head[16:24])
assert w >= 800 and h >= 500, f"screenshot too small: {w}x{h}"
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle) for f in fs)
print(json.dumps({"png": png, "width": w, "height": h, "bundle_mb": round(size / 2**20, 1),
                  "cli_version_plus_screenshot_s": round(t1 - t0, 2)}))
PY
