"""The autocast that a Lightning ``trainer.precision`` implies, for code that runs a
model outside the Trainer (evaluation after ``fit``).

Lightning's mixed-precision plugins wrap every training and validation step in
``torch.autocast``: ``bf16-mixed`` on a CPU or a GPU (bfloat16 matrix products on
float32 weights), ``16-mixed`` on a GPU (float16). Evaluation that calls the model
directly gets the same arithmetic only when it opens the same context, which
:func:`autocast_for` gives; every other precision (``32-true``, ``64-true``, the
``*-true`` half precisions, whose weights are already cast) needs none.

CPU support of bfloat16 varies: Intel AMX and ``avx512_bf16`` (AVX-512 BF16 on Intel
and AMD) run bfloat16 matrix products in hardware, other CPUs emulate them and are
often slower than float32. :func:`cpu_bf16_features` names what this CPU has;
``benchmarks/bench_bf16_cpu.py`` measures whether bf16 pays off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# Lightning precision values (and their short aliases) that run under autocast.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {
    "bf16-mixed": torch.bfloat16,
    "bf16": torch.bfloat16,
    "16-mixed": torch.float16,
    "16": torch.float16,
}
CPU_BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype of a ``trainer.precision`` value, or None (no autocast)."""
    return AUTOCAST_DTYPES.get(str(precision))


@contextlib.contextmanager
def autocast_for(precision: Any, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` on ``device``'s type with the dtype ``precision`` implies;
    nothing for full or true-half precisions.

    float16 autocast is a GPU setting (Lightning refuses ``16-mixed`` on a CPU), so a
    CPU model under ``16-mixed`` runs in float32 here too.
    """
    dtype = autocast_dtype(precision)
    device_type = torch.device(device).type
    if dtype is None or (device_type == "cpu" and dtype == torch.float16):
        yield
        return
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def cpu_bf16_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of :data:`CPU_BF16_FLAGS` the CPU reports (all False where
    ``/proc/cpuinfo`` cannot be read), e.g. ``{"amx_bf16": False, "avx512_bf16": True,
    ...}``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return dict.fromkeys(CPU_BF16_FLAGS, False)
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {flag: flag in flags for flag in CPU_BF16_FLAGS}
