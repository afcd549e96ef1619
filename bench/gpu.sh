#!/usr/bin/env bash
# The prepared GPU check (bench/gpu.py): the report's sizes on one GPU, one table at the end.
#   bash bench/gpu.sh            on a machine with a GPU and hw3 installed (pip install -e .)
#   bash bench/gpu.sh --dry-run  the same steps on the CPU with tiny sizes, in under a minute
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
exec "$python" bench/gpu.py "$@"
