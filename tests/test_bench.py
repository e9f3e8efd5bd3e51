"""The speed benchmark (``hogwild bench``): a smoke run on a tiny random-weight shape.

One CLI run (2 worker counts, one short context, fp32, 2 passes x 2 rounds, with the
transformers baseline and the profile) is shared by the tests; the floor and ratio arithmetic
is checked on hand-made numbers. Timings themselves are not checked: the machine is shared.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from hogwild import bench
from hogwild.bench import measure
from hogwild.cli import app


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = [
        "bench", "--config", "tiny", "--workers", "1,2", "--contexts", "48", "--dtypes", "float32",
        "--passes", "2", "--rounds", "2", "--warmup", "1", "--threads", "1", "--bandwidth-mb", "8",
        "--matmul-size", "128", "--out", str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "bench.json").read_text())
    return result.output, doc, out


def test_json_fields(smoke):
    _, doc, _ = smoke
    assert doc["format"] == bench.FORMAT
    assert doc["weights"] == "random" and doc["gpu_run"] is False
    assert doc["hardware"]["threads"] == 1 and doc["settings"]["threads"] == 1
    assert doc["hardware"]["bandwidth_bytes_per_s"] > 0
    for row in doc["results"]:  # the floor's bandwidth is measured between the timing rounds
        assert len(row["bandwidth_samples"]) == 2 and row["bandwidth_bytes_per_s"] > 0
    assert doc["hardware"]["matmul_flops_per_s"]["float32"] > 0
    assert doc["peak_rss_bytes"] > 0
    rows = {(r["impl"], r["workers"]): r for r in doc["results"]}
    assert set(rows) == {("ours", 1), ("ours", 2), ("transformers", 1), ("transformers", 2)}
    for r in rows.values():
        assert r["samples"] == 4 and r["ms_per_pass"] > 0 and r["floor_ms"] > 0
        assert math.isclose(r["tokens_per_s"], r["workers"] * r["passes_per_s"])
        assert r["floor_bound"] in ("bandwidth", "compute")
        assert r["vs_floor"] == pytest.approx(r["ms_per_pass"] / r["floor_ms"])
    # ratios
    assert rows["ours", 1]["vs_n1"] == 1.0
    assert rows["ours", 2]["vs_n1"] == pytest.approx(rows["ours", 2]["ms_per_pass"] / rows["ours", 1]["ms_per_pass"])
    assert rows["ours", 2]["vs_transformers"] == pytest.approx(
        rows["ours", 2]["ms_per_pass"] / rows["transformers", 2]["ms_per_pass"])
    assert rows["transformers", 2]["vs_transformers"] is None
    # KV accounting: ours stores every token once; transformers holds the prompt per row
    assert rows["ours", 2]["kv_bytes_in_use"] == rows["ours", 2]["kv_bytes_min"]
    assert rows["ours", 2]["kv_bytes_allocated"] >= rows["ours", 2]["kv_bytes_in_use"]
    assert rows["transformers", 2]["kv_bytes_in_use"] > rows["transformers", 2]["kv_bytes_min"]
    assert rows["transformers", 2]["kv_bytes_read"] > rows["ours", 2]["kv_bytes_read"]
    prof = doc["profile"]
    assert prof["workers"] == 2 and 0 <= prof["overhead_share"] <= 1
    assert prof["top_ops"] and prof["top_python"]


def test_table_and_png(smoke):
    output, _, out = smoke
    assert "ms/pass" in output and "x transf." in output and "transformers" in output
    assert "1 threads" in output and "GPU not run" in output
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_floor_arithmetic():
    model = bench.random_model("tiny", torch.float32, torch.device("cpu"))
    c = model.config
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied shape stays tied
    params = sum(p.numel() for p in model.parameters())  # tied table counted once
    assert bench.weight_bytes_read(model) == 4 * params
    layer_w, head_w = bench.matmul_params(model)
    assert head_w == c.vocab_size * c.hidden_size
    per_layer = c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim \
        + c.num_heads * c.head_dim * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    assert layer_w == c.num_layers * per_layer
    flops = bench.pass_flops(model, rows=2, logit_rows=2, attended=100)
    assert flops == 2 * layer_w * 2 + 2 * head_w * 2 + 4 * c.num_layers * c.num_heads * c.head_dim * 100


def test_ratios_on_given_numbers():
    def row(impl, n, ms):
        return dict(impl=impl, workers=n, context=1024, dtype="float32", ms_per_pass=ms, floor_ms=10.0,
                    kv_bytes_in_use=200, kv_bytes_min=100)

    rows = [row("ours", 1, 40.0), row("ours", 4, 50.0), row("transformers", 1, 45.0), row("transformers", 4, 100.0)]
    bench.add_ratios(rows)
    ours4 = rows[1]
    assert ours4["vs_n1"] == 1.25 and ours4["vs_transformers"] == 0.5 and ours4["vs_floor"] == 5.0
    assert ours4["kv_vs_min"] == 2.0 and rows[3]["vs_n1"] == pytest.approx(100 / 45)


def test_bad_arguments():
    result = CliRunner().invoke(app, ["bench", "--config", "nope"])
    assert result.exit_code == 2 and "unknown shape" in result.output
    result = CliRunner().invoke(app, ["bench", "--workers", "0", "--no-transformers"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_random_weights_shared_with_transformers():
    """The transformers baseline computes the same function with the same weights (fp32).

    Ours is the product path (fused, and prepacked on fp32 CPU), so it holds its own copy."""
    from hogwild.core.engine import Engine
    from hogwild.core.script import Script

    models = bench.load_models(bench.BenchConfig(random_weights=True, shape="tiny"), torch.float32, torch.device("cpu"))
    assert models.hf.model.embed_tokens.weight.data_ptr() == models.ours.model.embed_tokens.weight.data_ptr()
    ids = bench.prompt_ids(models.config.vocab_size, 24, seed=1)
    run = Engine(models.ours, "independent").start(Script(prompt_ids=ids, opening_ids=[[]]))
    run.step()
    with torch.no_grad():
        theirs = models.hf(input_ids=torch.tensor([ids])).logits[0, -1]
    assert (run.logits[0] - theirs).abs().max().item() < 1e-4


def test_native_kernel_status_is_recorded(smoke):
    from hogwild import kernels

    output, doc, _ = smoke
    assert doc["hardware"]["native_kernels"] == kernels.status()
    assert "native kernels" in output


def test_floor_compute_rate_on_cpu_includes_fp32(monkeypatch):
    """bf16 passes run in fp32 arithmetic on CPU: the floor must not divide by the crawl of an
    emulated bf16 matmul."""
    measured = {torch.bfloat16: 1e9, torch.float32: 100e9}
    monkeypatch.setattr(measure, "measure_matmul", lambda device, dtype, n: measured[dtype])
    rates: dict[str, float] = {}
    assert bench.compute_rate(torch.device("cpu"), torch.bfloat16, 64, rates, None) == 100e9
    assert rates == {"bfloat16": 1e9, "float32": 100e9}
    assert bench.compute_rate(torch.device("cpu"), torch.float32, 64, rates, None) == 100e9


def test_matmul_probe_is_bounded():
    assert bench.measure_matmul(torch.device("cpu"), torch.float32, n=64, repeats=1) > 0
