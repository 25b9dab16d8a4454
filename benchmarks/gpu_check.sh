#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) with the Python packages the GPU machine lacks.
#
#   bash benchmarks/gpu_check.sh --output gpu_check_out      # on one GPU, about 8 minutes
#   bash benchmarks/gpu_check.sh --tiny --output /tmp/check  # on a CPU, about a minute
#
# Wheels found in $GPU_CHECK_WHEELS (default: .whl/ in the repository) are installed first into
# /tmp/gpu_check_site and put on PYTHONPATH (yacs, termcolor, tabulate, faiss-cpu, ...: see
# docs/training.md "GPU check" for the download command). Uses $PYTHON, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
