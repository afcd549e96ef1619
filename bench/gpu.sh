#!/usr/bin/env bash
# The prepared GPU check (bench/gpu.py): step times with and without CUDA graphs, the quick start,
# a default syndigits DANN run and `hw3 reproduce --workers auto`, one table with the targets.
#   bash bench/gpu.sh            on a machine with a GPU and hw3's packages: about 7.5 minutes; a
#                                watchdog ends it at 9 (--deadline 540), the table printed either way
#   bash bench/gpu.sh --dry-run  the same stages on the CPU with tiny sizes, about a minute
#   bash bench/gpu.sh --help     its options (--budget, --deadline, --skip, --keep)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
exec "$python" bench/gpu.py "$@"
