"""hogwild.tensors: index tables from lists, and big buffers on transparent huge pages."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

from hogwild import kernels
from hogwild.core.cache import KVStore
from hogwild.models.config import ModelConfig
from hogwild.tensors import HUGE_PAGE, huge_empty, huge_pages_on, int_tensor


def thp_eligible(address: int) -> bool | None:
    """Whether the mapping holding ``address`` may get transparent huge pages
    (``THPeligible`` in /proc/self/smaps; None where the kernel does not say)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    inside = False
    for line in smaps.read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "THPeligible:":
            return line.split()[1] == "1"
    return None


def thp_available() -> bool:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return sys.platform == "linux" and mode.exists() and "[never]" not in mode.read_text()


needs_thp = pytest.mark.skipif(not thp_available(), reason="no transparent huge pages here")


def test_int_tensor_values_and_dtypes():
    assert int_tensor([3, -1, 7]).tolist() == [3, -1, 7]
    assert int_tensor([3, 2**40], torch.long).dtype == torch.long
    assert int_tensor([], torch.long).numel() == 0


def test_huge_empty_shape_dtype_and_alignment():
    t = huge_empty((3, 5), torch.float32)
    assert t.shape == (3, 5) and t.dtype == torch.float32 and t.is_contiguous()
    big = huge_empty((1536, 576), torch.bfloat16)
    assert big.shape == (1536, 576) and big.dtype == torch.bfloat16 and big.is_contiguous()
    assert big.data_ptr() % 64 == 0
    big.fill_(2.0)
    assert float(big.float().sum()) == 2.0 * big.numel()


@needs_thp
def test_huge_empty_memory_is_advised_for_huge_pages():
    assert huge_pages_on()
    mid = huge_empty((1 << 20,), torch.float32)  # 4 MiB: from the arena
    own = huge_empty((9 * HUGE_PAGE,), torch.uint8)  # above a quarter chunk (16 MiB): its own mapping
    for t in (mid, own):
        assert thp_eligible(t.data_ptr()) is True
    assert own.data_ptr() % HUGE_PAGE == 0


def test_huge_pages_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("HOGWILD_HUGE_PAGES", "0")
    assert not huge_pages_on()
    t = huge_empty((1 << 20,), torch.float32)
    assert t.shape == (1 << 20,)
    if thp_available():
        assert thp_eligible(t.data_ptr()) is not True


def test_arena_tensors_do_not_overlap_and_outlive_their_chunk():
    # more than a chunk's worth, so the arena moves on to a new chunk on the way
    ts = [huge_empty((600, 1024), torch.float32) for _ in range(30)]  # 2.4 MB each
    for i, t in enumerate(ts):
        t.fill_(float(i))
    gc.collect()
    for i, t in enumerate(ts):
        assert float(t.min()) == float(i) == float(t.max())
    keep = ts[0]
    del ts
    gc.collect()
    assert float(keep.sum()) == 0.0
    keep.add_(1.0)
    assert float(keep.mean()) == 1.0


@needs_thp
def test_kv_pools_and_packed_weights_sit_on_huge_pages():
    cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=4,
                      num_heads=4, num_kv_heads=2, head_dim=64, rms_eps=1e-5, rope_theta=1e4, max_positions=8192)
    store = KVStore(cfg, torch.bfloat16, capacity=4096)
    assert thp_eligible(store.k.data_ptr()) is True and thp_eligible(store.v.data_ptr()) is True
    assert not store.k.any() and not store.v.any()  # zeroed
    if kernels.available() and kernels.ops.pairs_pay(torch.zeros(1024, 512, dtype=torch.bfloat16)):
        w = torch.randn(1024, 512).to(torch.bfloat16)
        packed = kernels.PairedBF16.pack(w)
        assert thp_eligible(packed.data.data_ptr()) is True
        assert torch.equal(packed.unpack(), w)
