"""The super-weight guard: detection on a planted spike, exact corrections, the shipped text."""

from __future__ import annotations

import torch

from hogwild.quant.dequant import dequantize
from hogwild.quant.encode import quantize
from hogwild.kernels.quant_install import quant_linear_class
from hogwild.quant.plan import rtn_weights
from hogwild.quant.superweights import CALIBRATION_FILE, calibration_text, describe, find_super_weights, guard

from tiny import VOCAB, tiny_model

LAYER, ROW, COL = 1, 5, 7


def _planted():
    """A tiny model whose layer-1 MLP channel COL spikes and whose down_proj[ROW, COL] writes it."""
    model = tiny_model(seed=1, hidden_size=64, intermediate_size=96, num_layers=3)
    for p in model.parameters():
        p.data.mul_(0.3)
    mlp = model.model.layers[LAYER].mlp
    with torch.no_grad():
        mlp.gate_proj.weight[COL] = 3.0 * torch.sign(torch.randn(64))
        mlp.up_proj.weight[COL] = mlp.gate_proj.weight[COL]
        mlp.down_proj.weight[ROW, COL] = 4.0
    return model.fuse_projections()


def test_a_planted_super_weight_is_found():
    model = _planted()
    ids = torch.randint(2, VOCAB, (48,), generator=torch.Generator().manual_seed(0))
    found = find_super_weights(model, ids)
    assert found, "the planted spike was not found"
    top = found[0]
    assert (top.layer, top.row, top.col) == (LAYER, ROW, COL)
    assert top.value == 4.0 and abs(top.spike) > 10 * abs(top.value)
    assert all(s.layer == LAYER for s in found)
    assert "layer 1 down_proj[5, 7]" in describe(found)[0]
    # without a spike nothing is reported
    assert find_super_weights(tiny_model(seed=2).fuse_projections(), ids) == []


def test_guard_keeps_the_weight_exact_and_its_block_precise():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 512, generator=g) * 0.02
    w[3, 40] = 2.5  # dominates its blocks' scales
    for fmt in ("q4_k", "mxfp4", "nvfp4", "q8_0"):
        plain = quantize(w, fmt)
        kept = guard(w, fmt, [(3, 40)])
        back = dequantize(kept, torch.float64)
        # exact in fp32, the precision the kernels compute in (the correction is an fp32
        # delta on top of the block's decoded value, whatever that value is)
        assert back[3, 40].float() == 2.5 and abs(float(back[3, 40]) - 2.5) <= 2.5 * 2**-24, fmt
        assert kept.fix_index.tolist() == [[3, 40]]
        block = slice(32, 64)
        err_plain = (dequantize(plain)[3, block] - w[3, block]).abs().max()
        others = [i for i in range(32, 64) if i != 40]
        err_kept = (back[3, others].float() - w[3, others]).abs().max()
        assert err_kept < err_plain, fmt  # the block's scale no longer serves the outlier
        if fmt == "nvfp4":  # the tensor scale no longer serves the outlier either
            assert kept.scale < plain.scale
        else:  # other rows untouched
            assert torch.equal(dequantize(kept, fixes=False)[0], dequantize(plain)[0])


def test_rtn_weights_put_the_fixes_in_down_proj():
    model = _planted()
    ids = torch.randint(2, VOCAB, (48,), generator=torch.Generator().manual_seed(0))
    found = find_super_weights(model, ids)
    weights = rtn_weights(model, "mxfp4", found)
    down = weights[f"model.layers.{LAYER}.mlp.down_proj"]
    assert [ROW, COL] in down.fix_index.tolist()
    assert dequantize(down)[ROW, COL] == 4.0
    assert all(q.fix_index is None for p, q in weights.items() if not p.endswith(f"{LAYER}.mlp.down_proj"))


def test_the_kernel_applies_the_fixes():
    make = quant_linear_class()
    if make is None:
        import pytest

        pytest.skip("no native quantized kernels")
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 256, generator=g) * 0.02
    w[3, 40] = 3.0
    x = torch.randn(5, 256, generator=g)
    x[:, 40] = 200.0  # the spiking input channel
    kept = guard(w, "mxfp4", [(3, 40)])
    y = make(kept, None)(x).double()
    exact = x.double() @ dequantize(kept, torch.float64).T
    without = x.double() @ dequantize(kept, torch.float64, fixes=False).T
    assert (y - exact).abs().max() < 0.05 * exact.abs().max()
    assert (without - exact)[:, 3].abs().min() > 100  # the fix is what carries the spike


def test_the_calibration_text_ships():
    text = calibration_text()
    assert CALIBRATION_FILE.endswith(".txt") and len(text) > 10_000 and "MENENIUS" in text


def test_the_default_model_has_its_known_super_weight():
    """SmolLM2-135M: layer 11 down_proj[507, 1229] writes a spike of ~2e4 at the first token."""
    from hogwild.models.loading import load_model as load_plain
    from hogwild.quant.superweights import calibration_ids

    plain = load_plain("smollm2-135m", dtype="float32")
    found = find_super_weights(plain.model, calibration_ids(plain.tokenizer))
    cells = {(s.layer, s.row, s.col) for s in found}
    assert (11, 507, 1229) in cells
    assert all(abs(s.spike) > 1000 for s in found)
