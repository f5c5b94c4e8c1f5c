#!/usr/bin/env bash
# README command 1: set up synthloom in .venv, train on the bundled example table, print synthetic records.
#   bash examples/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
bash scripts/install_torch.sh  # the CPU build where there is no GPU; says which build and where from
python -m pip install --quiet -e .
synthloom train examples/customers.yaml
# the table's one business rule (last active after signup) as a validator: examples/rules.py
synthloom generate runs/customers --num-records 20 --seed 7 --validator examples/rules.py:active_after_signup
