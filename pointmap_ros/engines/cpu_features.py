"""What this CPU's matrix units can do, and the precision the CPU engines use by default.

bf16 inference pays off only where the CPU multiplies bf16 natively: Intel AMX (``amx_bf16``,
Sapphire Rapids and later) or AVX-512 BF16 (``avx512_bf16``, Cooper Lake, Zen 4). There oneDNN
runs a bf16 matmul/convolution several times faster than fp32 (a 4096² matmul with 2 threads:
~1240 vs ~250 GFLOP/s with AMX). Elsewhere PyTorch emulates bf16 through fp32 conversions and
it is *slower* than fp32, so the automatic choice is fp32 there.

``torch.backends.cpu.get_cpu_capability()`` only reports the vector ISA PyTorch dispatches to
(``AVX512`` on an AMX machine), not the bf16 extensions, so the flags come from
``/proc/cpuinfo`` (Linux). ``POINTMAP_CPU_BF16=0/1`` overrides the detection (e.g. to compare
precisions, or on a CPU whose flags are hidden by a hypervisor).
"""

from __future__ import annotations

import functools
import os

__all__ = ['cpu_flags', 'cpu_has_fast_bf16', 'default_cpu_precision', 'BF16_FLAGS']

#: Any of these means native bf16 arithmetic for oneDNN.
BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo (empty where unreadable)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 (AMX or AVX-512 BF16), or ``POINTMAP_CPU_BF16=1``."""
    override = os.environ.get('POINTMAP_CPU_BF16', '').strip()
    if override in ('0', '1'):
        return override == '1'
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def default_cpu_precision() -> str:
    """``'bf16'`` on CPUs with native bf16, else ``'fp32'`` (see the module docstring)."""
    return 'bf16' if cpu_has_fast_bf16() else 'fp32'
