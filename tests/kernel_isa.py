"""Fixtures shared by the native kernel tests: each instruction set the kernels can run on
this CPU (``hw_isa``), and the thread count restored after a test changes it."""

from __future__ import annotations

import pytest
import torch

from hogwild import kernels

ISA_NAMES = {1: "avx2", 2: "avx512", 3: "avx512bf16", 4: "amx"}
AMX = 4  # hw_isa of the AMX tiles


def _isas() -> list[int]:
    """The instruction sets the kernels can run on this CPU (``hw_isa``): AVX2 always, AVX-512,
    AVX-512 BF16 and AMX where the CPU has them. Each gets the same correctness and invariance
    tests."""
    lib = kernels.library()
    if lib is None:
        return [1]
    found = [1] + [i for i in (2, 3, 4) if lib.hw_isa(i) == i]
    lib.hw_isa(0)
    return found


ISAS = _isas()


@pytest.fixture(params=ISAS, ids=lambda i: ISA_NAMES[i])
def isa(request):
    """Pin the linear and attention kernels to one instruction set for the test."""
    lib = kernels.library()
    assert lib.hw_isa(request.param) == request.param
    yield request.param
    lib.hw_isa(0)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
