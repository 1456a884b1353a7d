# Sourced by the GPU scripts (gpu_check.sh, gpu_build.sh), with ROOT, WORK, LOGS and PY set: the wheels carried beside
# the tree (.whl/, from benchmarks/gpu_wheels.sh) go into a private folder, ahead of nothing they shadow; then the
# tree and that folder on PYTHONPATH, no hub, and a private cache.
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    # (compiled to bytecode once here: every step is a new process that imports diffusers)
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target "$WORK/site" \
        "$ROOT"/.whl/*.whl > "$LOGS/wheels.log" 2>&1 || echo "wheel install failed: see $LOGS/wheels.log"
    "$PY" -m compileall -q -j 0 "$WORK/site" >> "$LOGS/wheels.log" 2>&1
fi
export PYTHONPATH="$ROOT${WORK:+:$WORK/site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NEUROLENS_CACHE_DIR="$WORK/cache"
