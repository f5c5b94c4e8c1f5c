#!/usr/bin/env bash
# Install torch into the active venv: the CPU build where there is no NVIDIA GPU, torch's default
# (CUDA) build where there is one. The package itself asks only for a range (pyproject.toml), so
# users with their own builds keep them. Used by examples/quickstart.sh and .ci/run.
#   bash scripts/install_torch.sh [VERSION]      (default 2.13.0)
set -euo pipefail
version="${1:-2.13.0}"
cpu_index="https://download.pytorch.org/whl/cpu"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -m pip install --quiet "torch==$version"
  source="the default index (a GPU is present)"
elif python -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=5)" >/dev/null 2>&1; then
  # PyTorch's own CPU wheels: ~200 MB, where the default index resolves to the CUDA build (GBs)
  python -m pip install --quiet --index-url "$cpu_index" --extra-index-url https://pypi.org/simple "torch==$version"
  source="PyTorch's CPU wheel index"
else
  python -m pip install --quiet "torch==$version"
  source="the default index (PyTorch's CPU wheel index could not be reached)"
fi
python - "$source" <<'PY'
import sys
import warnings

warnings.filterwarnings("ignore")  # (torch warns when numpy is not installed yet)
import torch

build = "the CPU build" if torch.version.cuda is None else f"the CUDA {torch.version.cuda} build"
print(f"torch {torch.__version__}: {build}, from {sys.argv[1]}")
if torch.version.cuda is not None and not torch.cuda.is_available():
    print("  (no GPU here: the CUDA libraries are unused; reach https://download.pytorch.org/whl/cpu for the small build)")
PY
