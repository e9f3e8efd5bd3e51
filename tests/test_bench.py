"""The speed benchmark (``hogwild bench``): smoke runs on a tiny random-weight shape.

One CLI run (2 worker counts, one short context, fp32, 2 passes x 2 rounds, with the
transformers baseline and the profile) is shared by most tests; one library run covers the
runs axis (R = 1 and 3 runs of 2 workers in one batch, with a shared prompt prefix). The
floor and ratio arithmetic is checked on hand-made numbers. Timings themselves are not
checked: the machine is shared.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from hogwild import bench, kernels
from hogwild.bench import measure
from hogwild.cli import app
from hogwild.core.batch import MIN_PREFIX
from hogwild.errors import InvalidRequestError
from hogwild.models.shapes import SHAPES

SHARED = 24  # prompt tokens the runs of the runs-axis smoke run share (above MIN_PREFIX)


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
    assert doc["settings"]["runs"] == [1] and doc["settings"]["shared_prefix"] == 0 and doc["skipped"] == []
    for r in rows.values():
        assert r["samples"] == 4 and r["ms_per_pass"] > 0 and r["floor_ms"] > 0
        assert r["runs"] == 1 and r["rows_per_pass"] == r["workers"] and r["model_calls"] == 1
        assert r["vs_r1"] == 1.0
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
    assert prof["workers"] == 2 and prof["runs"] == 1 and 0 <= prof["overhead_share"] <= 1
    assert prof["top_ops"] and prof["top_python"]


def test_table_and_png(smoke):
    output, _, out = smoke
    assert "ms/pass" in output and "x transf." in output and "transformers" in output
    assert "x R=1" in output and "throughput float32 ctx 48: ours" in output
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


# ---------------------------------------------------------------------------- the runs axis
@pytest.fixture(scope="module")
def runs_smoke(tmp_path_factory):
    """R = 1 and 3 runs of N = 2 workers, prompts of 48 tokens whose first 24 are shared."""
    out = tmp_path_factory.mktemp("bench-runs")
    cfg = bench.BenchConfig(
        model="tiny", random_weights=True, shape="tiny", workers=[2], runs=[1, 3], contexts=[48],
        dtypes=["float32"], passes=2, rounds=2, warmup=1, threads=1, bandwidth_mb=8, matmul_size=128,
        shared_prefix=SHARED, profile_runs=3,
    )
    text = io.StringIO()
    doc = bench.bench_main(cfg, out, Console(file=text, width=240))
    assert json.loads((out / "bench.json").read_text()) == doc
    return text.getvalue(), doc, out


def test_runs_axis_rows_and_throughput(runs_smoke):
    _, doc, _ = runs_smoke
    rows = {(r["impl"], r["runs"]): r for r in doc["results"]}
    assert set(rows) == {("ours", 1), ("ours", 3), ("transformers", 1), ("transformers", 3)}
    for (impl, runs), r in rows.items():
        assert r["workers"] == 2 and r["rows_per_pass"] == runs * 2  # one pass: every run, every worker
        assert math.isclose(r["tokens_per_s"], runs * 2 * r["passes_per_s"])
        assert r["model_calls"] == (bench.model_calls([2] * runs, kernels.MAX_ROWS) if impl == "ours" else 1)
    assert rows["ours", 3]["vs_r1"] == pytest.approx(rows["ours", 3]["ms_per_pass"] / rows["ours", 1]["ms_per_pass"])
    assert rows["ours", 3]["vs_transformers"] == pytest.approx(
        rows["ours", 3]["ms_per_pass"] / rows["transformers", 3]["ms_per_pass"])
    assert doc["profile"]["runs"] == 3 and doc["skipped"] == []


def test_runs_axis_shared_prefix_stored_and_read_once(runs_smoke):
    _, doc, _ = runs_smoke
    rows = {(r["impl"], r["runs"]): r for r in doc["results"]}
    prefix = SHARED * SHAPES["tiny"].kv_bytes_per_token(4)  # fp32
    one, three = rows["ours", 1], rows["ours", 3]
    # kv_bytes_min is R separate copies; the pool holds the prefix once
    assert one["kv_bytes_in_use"] == one["kv_bytes_min"]
    assert three["kv_bytes_min"] == 3 * one["kv_bytes_min"]
    assert three["kv_bytes_in_use"] == three["kv_bytes_min"] - 2 * prefix < three["kv_bytes_min"]
    assert three["kv_bytes_allocated"] >= three["kv_bytes_in_use"]
    # the floor: weights once per pass, K/V and FLOPs of all rows (the prefix read once)
    assert three["weight_bytes_read"] == one["weight_bytes_read"]
    assert three["kv_bytes_read"] == 3 * one["kv_bytes_read"] - 2 * prefix
    assert three["flops"] == 3 * one["flops"]
    # transformers: R x N rows, each with its own copy of its run's prompt
    hf1, hf3 = rows["transformers", 1], rows["transformers", 3]
    assert hf3["kv_bytes_in_use"] == 3 * hf1["kv_bytes_in_use"] > hf3["kv_bytes_min"]
    assert hf3["kv_bytes_read"] == 3 * hf1["kv_bytes_read"]


def test_runs_axis_report_and_png(runs_smoke):
    output, doc, out = runs_smoke
    assert "x R=1" in output and f"shared prefix {SHARED} tokens" in output
    assert "separate copies" in output and "throughput float32 ctx 48: ours" in output
    assert any(line.startswith("throughput") and "x R=1" in line for line in bench.summary_lines(doc))
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_run_prompts_share_the_prefix():
    prompts = bench.run_prompts(1000, 40, 3, 20, seed=5)
    assert prompts[0] == bench.prompt_ids(1000, 40, 5)  # one run: the prompt of a one-run bench
    assert all(len(p) == 40 and p[:20] == prompts[0][:20] for p in prompts)
    assert len({tuple(p[20:]) for p in prompts}) == 3
    assert bench.run_prompts(1000, 40, 2, 0, seed=5)[1][:20] != prompts[0][:20]


def test_model_calls_pack_runs_in_order():
    assert bench.model_calls([], 16) == 0
    assert bench.model_calls([2] * 8, 16) == 1
    assert bench.model_calls([2] * 9, 16) == 2
    assert bench.model_calls([20], 16) == 1  # a run over the limit gets a call of its own
    assert bench.model_calls([1, 20, 1], 16) == 3
    assert bench.model_calls([2] * 64, 128) == 1


def test_runs_ratios_on_given_numbers():
    def row(impl, n, r, ms):
        return dict(impl=impl, workers=n, runs=r, context=1024, dtype="float32", ms_per_pass=ms, floor_ms=10.0,
                    kv_bytes_in_use=100, kv_bytes_min=200)

    rows = [row("ours", 2, 1, 20.0), row("ours", 2, 8, 40.0), row("ours", 1, 8, 32.0),
            row("transformers", 2, 8, 160.0)]
    bench.add_ratios(rows)
    assert rows[1]["vs_r1"] == 2.0 and rows[1]["vs_n1"] == 1.25 and rows[1]["vs_transformers"] == 0.25
    assert rows[1]["kv_vs_min"] == 0.5 and rows[2]["vs_r1"] is None and rows[3]["vs_r1"] is None


def test_runs_settings_are_checked():
    for kwargs in (dict(runs=[0]), dict(runs=[]), dict(shared_prefix=MIN_PREFIX - 1),
                   dict(shared_prefix=256, contexts=[256, 1024])):
        with pytest.raises(InvalidRequestError):
            bench.BenchConfig(**kwargs).validate()
    bench.BenchConfig(shared_prefix=MIN_PREFIX, contexts=[256]).validate()


def test_an_older_result_file_still_renders(tmp_path):
    """A bench.json from before the runs axis (no ``runs``, ``vs_r1``, ``skipped``) is shown as R = 1."""
    stored = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench-cpu" / "bench.json"
    if not stored.exists():
        pytest.skip("no stored result file")
    doc = json.loads(stored.read_text())
    text = io.StringIO()
    bench.print_report(doc, Console(file=text, width=240))
    assert "x R=1" in text.getvalue() and "throughput bfloat16 ctx 1024" in text.getvalue()
    bench.write_png(doc, tmp_path / "old.png")
    assert (tmp_path / "old.png").stat().st_size > 1000
