"""Which precision this machine runs fast: a runtime probe, never a fixed flag.

if cpu_has_native_bf16(): ...                       # AVX512-BF16 / AMX: bf16 products 3-7x fp32's
precision = sampling_precision("auto", device)      # generate.precision resolved: "bf16" or "fp32"
"""

from __future__ import annotations

import functools

import torch


def sampling_precision(setting: str, device: torch.device) -> str:
    """generate.precision resolved for this machine: auto is bf16 on a CPU with bf16 instructions
    (a fixed property of the machine, so a seed gives the same records on it every time), fp32
    elsewhere (GPUs included, where sampling is not bound by these products)."""
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own instructions (AVX512-BF16, AMX), not emulated."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())
