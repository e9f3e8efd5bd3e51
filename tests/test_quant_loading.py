"""GGUF tensors read as stored, the --weights setting, quantized models end to end."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import quantize as gguf_quantize

from hogwild import kernels
from hogwild.errors import InvalidRequestError, ModelLoadError
from hogwild.quant import QuantWeight
from hogwild.quant.dequant import dequantize
from hogwild.quant.encode import quantize
from hogwild.quant.gguf_tensors import as_quant_weight, hf_name, read_gguf, unpermute_rows
from hogwild.kernels.quant_install import apply_dequantized, install, quant_linear_class
from hogwild.quant.plan import concat_rows, fallback_format, parse_weights, resolve_setting, rtn_weights

from test_batch import SPECS, same, script, trace_batched, trace_solo
from tiny import tiny_model


def test_names_map_to_transformers():
    assert hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert hf_name("blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias"
    assert hf_name("blk.7.ffn_down.weight") == "model.layers.7.mlp.down_proj.weight"
    assert hf_name("blk.2.attn_norm.weight") == "model.layers.2.input_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    assert hf_name("rope_freqs.weight") is None and hf_name("blk.1.unknown.weight") is None


@pytest.mark.parametrize("heads", [1, 3, 4])
def test_unpermute_rows_matches_transformers(heads):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(heads * 8 * 5, dtype=np.float32).reshape(heads * 8, 5)
    expected = LlamaTensorProcessor()._reverse_permute_weights(w, heads, heads)
    assert np.array_equal(w[unpermute_rows(heads * 8, heads).numpy()], expected)


def _write_gguf(path, tensors: dict[str, tuple[np.ndarray, T]], arch: str = "llama") -> None:
    writer = GGUFWriter(str(path), arch)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_types_kept_converted_or_dequantized(tmp_path, caplog):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 256)) * 0.1).astype(np.float32)
    q4k = quantize(torch.from_numpy(w), "q4_k").data.numpy()
    tensors = {
        "blk.0.attn_q.weight": (gguf_quantize(w, T.Q8_0), T.Q8_0),  # permuted rows (llama)
        "blk.0.ffn_up.weight": (q4k, T.Q4_K),
        "blk.0.attn_v.weight": (np.zeros((8, 84), dtype=np.uint8), T.Q2_K),  # no kernel
        "blk.0.attn_norm.weight": (np.ones(256, dtype=np.float16), T.F16),
    }
    path = tmp_path / "mini.gguf"
    _write_gguf(path, tensors)
    with caplog.at_level(logging.WARNING, logger="hogwild.quant.gguf_tensors"):
        got = read_gguf(path, num_heads=2, num_kv_heads=2)
    q = got["model.layers.0.self_attn.q_proj.weight"]
    assert isinstance(q, QuantWeight) and q.fmt.name == "q8_0"
    stored = dequantize(as_quant_weight("x", gguf_quantize(w, T.Q8_0), int(T.Q8_0), 8, 256))
    assert torch.equal(dequantize(q), stored[unpermute_rows(8, 2)])
    up = got["model.layers.0.mlp.up_proj.weight"]
    assert isinstance(up, QuantWeight) and np.array_equal(up.data.numpy(), q4k)  # not permuted
    v = got["model.layers.0.self_attn.v_proj.weight"]
    assert isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.shape == (8, 256)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "blk.0.attn_v.weight" in lines[0] and "Q2_K" in lines[0]
    assert torch.equal(got["model.layers.0.input_layernorm.weight"], torch.ones(256))


def test_a_corrupt_block_names_the_tensor(tmp_path):
    with pytest.raises(ModelLoadError, match="blk.4.ffn_down.weight.*corrupt"):
        as_quant_weight("blk.4.ffn_down.weight", np.zeros(33 * 8, dtype=np.uint8), 8, 8, 256)
    w = gguf_quantize(np.ones((4, 64), dtype=np.float32), T.Q8_0)
    path = tmp_path / "cut.gguf"
    _write_gguf(path, {"blk.0.ffn_down.weight": (w, T.Q8_0)})
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ModelLoadError, match="corrupt|truncated"):
        read_gguf(path, 1, 1)


def test_smollm2_as_stored_equals_the_conversion():
    """Dequantizing the blocks we keep gives bit for bit the weights the conversion path writes."""
    from safetensors.torch import load_file

    from hogwild.models import registry
    from hogwild.models.hub import resolve

    got = read_gguf(registry.gguf_path("smollm2-135m"), num_heads=9, num_kv_heads=3)
    reference = load_file(str(resolve("smollm2-135m") / "model.safetensors"))
    assert set(got) == set(reference)
    kinds = {type(v).__name__ for v in got.values()}
    assert kinds == {"QuantWeight", "Tensor"}
    for name, value in got.items():
        dense = dequantize(value) if isinstance(value, QuantWeight) else value
        assert torch.equal(dense, reference[name]), name


def test_native_load_stays_light():
    """A native load neither initialises the meta model nor concatenates meta placeholders
    (either imports torch._dynamo, 1 s of every load), and its blocks are torch-owned
    writable copies (not views of the read-only file map)."""
    import subprocess
    import sys

    code = ("import sys; from hogwild.loader import load_model; "
            "m = load_model('smollm2-135m', dtype='native'); "
            "print(m.weights, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["native", "False"], done.stdout
    assert "not writable" not in done.stderr
    blocks = np.frombuffer(bytes(range(34)) * 4, dtype=np.uint8)
    blocks.flags.writeable = False
    weight = as_quant_weight("t", blocks, int(T.Q8_0), 4, 32)
    assert weight.data.shape == (4, 34) and weight.data.numpy().flags.writeable


def test_weight_setting_is_one_option():
    assert parse_weights(None) == "auto"
    assert parse_weights("float32") == parse_weights(torch.float32) == "fp32"
    assert parse_weights("BFloat16") == "bf16" and parse_weights("Q4_K") == "q4_k"
    assert resolve_setting(None, "bfloat16") == "bf16"  # --dtype alone: the old name
    assert resolve_setting("nvfp4", None) == "nvfp4"
    assert resolve_setting("fp32", "float32") == "fp32"
    with pytest.raises(InvalidRequestError, match="disagree"):
        resolve_setting("q8_0", "bfloat16")
    with pytest.raises(InvalidRequestError, match="unknown weight format"):
        parse_weights("int3")


def test_fallback_format_for_rows_that_do_not_fit():
    assert fallback_format("q4_k", 1536) == "q4_k"
    assert fallback_format("q4_k", 576) == "q8_0"
    assert fallback_format("nvfp4", 96) == "q8_0"
    assert fallback_format("q8_0", 40) is None


def _tiny_quantized(fmt: str):
    model = tiny_model(seed=3, hidden_size=256, intermediate_size=512).fuse_projections()
    return model, rtn_weights(model, fmt)


def test_concat_rows_fuses_as_stored():
    w = torch.randn(12, 64)
    parts = [quantize(w[:4], "q8_0"), quantize(w[4:], "q8_0")]
    assert torch.equal(dequantize(concat_rows(parts)), dequantize(quantize(w, "q8_0")))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_k", "nvfp4"])
def test_fallback_computes_with_the_quantized_values(fmt):
    model, weights = _tiny_quantized(fmt)
    apply_dequantized(model, weights)
    for path, q in weights.items():
        assert torch.equal(model.get_submodule(path).weight, dequantize(q)), path


NATIVE = pytest.mark.skipif(quant_linear_class() is None, reason="no native quantized kernels")


def _as_stored(model, fmt: T) -> dict[str, QuantWeight]:
    """Every linear in a format only ggml's own encoder writes (as a GGUF would store it)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            data = gguf_quantize(m.weight.detach().numpy(), fmt)
            out[name] = as_quant_weight(name, data, int(fmt), m.out_features, m.in_features)
    return out


@NATIVE
@pytest.mark.parametrize("fmt", ["q4_k", "mxfp4", "nvfp4", T.Q4_1, T.Q5_0])
def test_quantized_runs_are_the_same_alone_or_batched(fmt):
    model = tiny_model(seed=3, hidden_size=256, intermediate_size=512).fuse_projections()
    weights = rtn_weights(model, fmt) if isinstance(fmt, str) else _as_stored(model, fmt)
    # q/k/v in two formats: the layer keeps separate linears
    weights.pop("model.layers.0.self_attn.qkv_proj")
    c = model.config
    w = model.model.layers[0].self_attn.qkv_proj.weight
    q_rows = c.num_heads * c.head_dim
    weights["model.layers.0.self_attn.q_proj"] = quantize(w[:q_rows], "q8_0")
    weights["model.layers.0.self_attn.v_proj"] = quantize(w[q_rows + c.num_kv_heads * c.head_dim:], "mxfp4")
    assert install(model, weights) == len(weights)
    model = kernels.prepare_for_cpu(model)
    assert model.model.layers[0].self_attn.qkv_proj is None
    passes = 8
    solo = [trace_solo(model, "native", layout, script(seed, workers), passes) for layout, workers, seed in SPECS]
    traces, _, _ = trace_batched(model, "native", SPECS, passes, [0, 3, 1, 6, 2])
    for i in range(len(SPECS)):
        assert same(solo[i], traces[i]), f"run {i} differs when batched"


@NATIVE
def test_default_model_native_and_quantized_load(default_model):
    from hogwild.loader import load_model
    from hogwild.models.sequence import SequencePlan
    from hogwild.quant.superweights import calibration_ids

    ids = calibration_ids(default_model.tokenizer, 96)
    reference = default_model.model(ids, SequencePlan(default_model.config, capacity=96)).log_softmax(-1)
    native = load_model("smollm2-135m")
    assert native.weights == "native"
    head = native.model.lm_head
    assert type(head).__name__ == "QuantLinear" and head.qweight.fmt.name == "q8_0"
    logits = native.model(ids, SequencePlan(native.config, capacity=96)).log_softmax(-1)
    kl = float((reference.exp() * (reference - logits)).sum(-1).mean())
    assert kl < 0.05  # the same weights (the file's), computed with int8 activations
    q4k = load_model("smollm2-135m", weights="q4_k")
    assert q4k.weights == "q4_k" and len(q4k.super_weights) >= 1
    down = q4k.model.model.layers[q4k.super_weights[0].layer].mlp.down_proj
    assert down.qweight.fix_index is not None


def test_cli_weights_and_its_old_name():
    from typer.testing import CliRunner

    from hogwild.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["solve", "What is 1 + 1?", "--weights", "q4_k", "--dtype", "bfloat16"])
    assert result.exit_code != 0 and "disagree" in result.output
    result = runner.invoke(app, ["solve", "What is 1 + 1?", "--weights", "int3"])
    assert result.exit_code != 0 and "unknown weight format" in result.output
    result = runner.invoke(app, ["bench", "--weights", "q4_k", "--dtypes", "float32"])
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(app, ["bench", "--random-weights", "--config", "tiny", "--weights", "q4_k"])
    assert result.exit_code != 0 and "real model" in result.output
    result = runner.invoke(app, ["quality", "--weights", "fp32", "--guard", "sometimes"])
    assert result.exit_code != 0 and "--guard" in result.output


@pytest.mark.skipif(quant_linear_class() is None, reason="needs the native quantized kernels")
def test_native_load_reads_no_float_copies_of_its_matrices(monkeypatch):
    """--weights native loads the GGUF's matrices straight into the kernels and reads only
    the rest in float: the same model, bit for bit, as reading the float model whole."""
    from hogwild import loader
    from hogwild.models import loading
    from hogwild.models.sequence import SequencePlan
    from hogwild.quant import plan
    from hogwild.quant.superweights import calibration_ids

    read: list[frozenset] = []
    real = loading._read_weights
    monkeypatch.setattr(loading, "_read_weights", lambda files, dtype, device, skip=frozenset(): (
        read.append(skip), real(files, dtype, device, skip))[1])
    fast = loader.load_model("smollm2-135m")
    assert read and "model.layers.0.mlp.down_proj.weight" in read[-1]
    assert "model.embed_tokens.weight" not in read[-1] and "model.norm.weight" not in read[-1]
    assert not any(p.is_meta for p in fast.model.parameters())
    monkeypatch.setattr(plan, "float_copies", lambda weights, config: None)  # the slow path,
    monkeypatch.setattr(loading, "_mapped_float32", lambda *args: None)  # reading every weight
    slow = loader.load_model("smollm2-135m")
    assert read[-1] == frozenset() and fast.weights == slow.weights == "native"
    assert fast.weights_note == slow.weights_note
    ids = calibration_ids(fast.tokenizer, 48)
    a = fast.model(ids, SequencePlan(fast.config, capacity=48))
    b = slow.model(ids, SequencePlan(slow.config, capacity=48))
    assert torch.equal(a, b)


def test_float_copies_refuse_a_half_quantized_fused_layer():
    """Only whole fused layers are skipped; a layer with float parts is read whole."""
    from hogwild.quant import plan

    config = tiny_model().config
    q = QuantWeight(plan.block_format("q8_0"), torch.zeros(1, 34, dtype=torch.uint8), 1, 32)
    whole = {"model.layers.0.self_attn.qkv_proj": q}
    keys = plan.float_copies(whole, config)
    assert keys == {f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv"}
    parts = {"model.layers.0.self_attn.q_proj": q, "model.layers.0.self_attn.k_proj": q,
             "model.layers.0.self_attn.v_proj": q, "lm_head": q}
    tied = plan.float_copies(parts, config)
    assert "model.layers.0.self_attn.v_proj.weight" in tied
    assert ("lm_head.weight" in tied) == (not config.tie_embeddings)
    assert plan.float_copies({"model.layers.0.self_attn.v_proj": q}, config) is None
