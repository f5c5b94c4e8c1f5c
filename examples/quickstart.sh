#!/usr/bin/env bash
# README command 1: set up synthloom in .venv, train on the bundled example table, print synthetic records.
#   bash examples/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -m pip install --quiet -e .                  # a GPU: torch's default (CUDA) build
else
  python -m pip install --quiet "torch==2.13.0" -e .  # no GPU: the CPU build
fi
synthloom train examples/customers.yaml
synthloom generate runs/customers --num-records 20 --seed 7
