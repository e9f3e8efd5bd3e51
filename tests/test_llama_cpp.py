"""The llama.cpp yardstick (``hogwild.bench.llama_cpp``) and llama-perplexity's scoring in
``hogwild quality --window``: output parsing, errors, and the windows scored."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from hogwild.bench import llama_cpp, quality
from hogwild.cli import app
from hogwild.errors import InvalidRequestError
from hogwild.models.sequence import SequencePlan

from tiny import VOCAB, tiny_config, tiny_model

# What llama-batched-bench -pps prints (abridged); T_TG is column 7, TG column 2, B column 3.
BATCHED_BENCH = """
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|  1024 |     32 |    1 |   1056 |    0.912 |  1122.81 |    0.384 |    83.33 |    1.296 |   814.81 |
|  1024 |     32 |    4 |   1152 |    0.905 |  1131.49 |    0.736 |   173.91 |    1.641 |   702.01 |
"""

# The end of llama-perplexity --kl-divergence (abridged, as printed on this machine).
KL_REPORT = """
====== Perplexity statistics ======
Mean PPL(Q)                   :  40.747021 ±   4.186186
Mean PPL(base)                :  40.491712 ±   4.159755
====== KL divergence statistics ======
Mean    KLD:   0.002989 ±   0.000090
Maximum KLD:   0.029692
====== Token probability statistics ======
RMS Δp    :  1.052 ± 0.065 %
Same top p: 96.667 ± 0.562 %
"""


def test_parse_batched_bench():
    assert llama_cpp.parse_batched_bench(BATCHED_BENCH) == {1: pytest.approx(12.0), 4: pytest.approx(23.0)}
    assert llama_cpp.parse_batched_bench("no table here") == {}


def test_parse_kl():
    got = llama_cpp.parse_kl(KL_REPORT)
    assert got == {"mean_kl": pytest.approx(0.002989), "perplexity": pytest.approx(40.747021),
                   "same_top1": pytest.approx(0.96667)}
    with pytest.raises(InvalidRequestError, match="KLD"):
        llama_cpp.parse_kl("Final estimate: PPL = 40.49")


def test_missing_binary_and_failing_tool_are_clear_errors(tmp_path):
    with pytest.raises(InvalidRequestError, match="llama-perplexity does not exist"):
        llama_cpp.binary(tmp_path, "llama-perplexity")
    tool = tmp_path / "llama-quantize"
    tool.write_text("#!/bin/sh\necho 'invalid file magic' >&2\nexit 3\n")
    tool.chmod(0o755)
    with pytest.raises(InvalidRequestError, match=r"llama-quantize failed \(exit 3\):\ninvalid file magic"):
        llama_cpp.requantize(tmp_path, tmp_path / "in.gguf", tmp_path / "out.gguf", "Q8_0", 1)
    assert not (tmp_path / "out.gguf").exists()


def _kl_by_hand(ref, cand, ids, window):
    """KL per window read from an empty cache, positions window//2 .. window-2 scored."""
    kls = []
    for s in range(0, len(ids) - window + 1, window):
        seg = ids[s : s + window]
        p = ref.model(seg, SequencePlan(ref.config)).log_softmax(-1)
        q = cand.model(seg, SequencePlan(cand.config)).log_softmax(-1)
        kls.append((p.exp() * (p - q)).sum(-1)[window // 2 : window - 1])
    return torch.cat(kls)


@pytest.mark.parametrize("chunk", [5, 256])
def test_windows_score_what_llama_perplexity_scores(monkeypatch, chunk):
    monkeypatch.setattr(quality, "CHUNK", chunk)  # chunk boundaries inside and across windows
    ref = SimpleNamespace(model=tiny_model(0), config=tiny_config())
    cand = SimpleNamespace(model=tiny_model(1), config=tiny_config())
    ids = torch.randint(0, VOCAB, (53,), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = quality.compare(ref, cand, ids, window=16)
        expected = _kl_by_hand(ref, cand, ids, 16)
        whole = quality.compare(ref, cand, ids)
        same = quality.compare(ref, ref, ids, window=16)
    assert got["tokens"] == 3 * 7 == len(expected)  # 3 whole windows, 7 scored in each
    assert got["mean_kl"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert got["max_kl"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert whole["tokens"] == 52 and whole["mean_kl"] != pytest.approx(got["mean_kl"])
    assert same["mean_kl"] == pytest.approx(0.0, abs=1e-6) and same["same_top1"] == 1.0
    with pytest.raises(ValueError, match="nothing to score"):
        quality.compare(ref, cand, ids[:10], window=16)


def test_quality_cli_checks_window_and_llama_cpp(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["quality", "--weights", "q8_0", "--llama-cpp", str(tmp_path)])
    assert result.exit_code != 0 and "needs --window" in result.output
    result = runner.invoke(app, ["quality", "--weights", "q8_0", "--window", "4096", "--tokens", "2048"])
    assert result.exit_code != 0 and "--window must be" in result.output


def _fake_tool(path, script: str):
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_batched_bench_retries_a_crash_without_repacking(tmp_path):
    """A crashed llama-batched-bench is run again with --no-repack, and the result says so."""
    table = BATCHED_BENCH.strip().replace("\n", "\\n")
    _fake_tool(tmp_path / "llama-batched-bench",
               f'case "$*" in *--no-repack*) printf "{table}\\n";; *) kill -SEGV $$;; esac\n')
    got = llama_cpp.batched_bench(tmp_path, tmp_path / "m.gguf", [1, 4], 1024, 2)
    assert got["ms"] == {1: pytest.approx(12.0), 4: pytest.approx(23.0)}
    assert got["cmd"].endswith("--no-repack") and "crashed" in got["note"]
    _fake_tool(tmp_path / "llama-batched-bench", "echo 'error: unknown model' >&2; exit 1\n")
    with pytest.raises(InvalidRequestError, match="exit 1"):  # a plain failure is not retried
        llama_cpp.batched_bench(tmp_path, tmp_path / "m.gguf", [1], 1024, 2)


def test_bench_ratio_to_llama_cpp():
    from hogwild import bench

    rows = [dict(impl="ours", workers=n, runs=r, context=1024, dtype="native", ms_per_pass=ms, floor_ms=1.0,
                 kv_bytes_in_use=1, kv_bytes_min=1)
            for n, r, ms in [(1, 1, 10.0), (4, 1, 18.0), (4, 8, 90.0)]]
    llama = [dict(context=1024, gguf="m.gguf", cmd="", note="", ms={"1": 12.5, "4": 24.0})]  # keys as JSON has them
    bench.add_ratios(rows, llama)
    assert [r["vs_llama_cpp"] for r in rows] == [pytest.approx(0.8), pytest.approx(0.75), None]


def test_requantize_names_llama_cpps_type_and_makes_it_pure(tmp_path):
    """Each format ours has and llama.cpp has too is made with one type for every matrix:
    MXFP4 under its MoE recipe's name, which --pure applies everywhere."""
    tool = tmp_path / "llama-quantize"
    tool.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\ncp /dev/null "$4"\n')
    tool.chmod(0o755)
    assert set(llama_cpp.LLAMA_TYPES) == {"q8_0", "q4_k", "mxfp4"}  # no NVFP4 encoder there
    out = llama_cpp.requantize(tmp_path, tmp_path / "in.gguf", tmp_path / "mx.gguf", llama_cpp.LLAMA_TYPES["mxfp4"], 2)
    assert out.is_file() and (tmp_path / "args").read_text().split() == [
        "--allow-requantize", "--pure", str(tmp_path / "in.gguf"), str(tmp_path / "mx.partial"), "MXFP4_MOE", "2"]


def test_quality_report_files(tmp_path):
    """write(): the JSON, its table (the llama.cpp columns where any row has them) and the
    plot next to it."""
    row = dict(weights="q8_0", kv="auto", guard=True, tokens=64, mean_kl=0.004, max_kl=0.05, perplexity=40.1,
               same_top1=0.96, super_weights=5, load_s=1.0, note="")
    doc = dict(model="tiny", reference="bf16", text="t.txt", tokens=64, window=32,
               results=[dict(row, llama_kl=0.0038, vs_llama_kl=1.05, llama_perplexity=40.0),
                        dict(row, weights="nvfp4", mean_kl=0.29)])
    path = quality.write(doc, tmp_path / "out")
    assert path.name == "quality-tiny.json" and path.is_file()
    table = (tmp_path / "out" / "quality-tiny.md").read_text()
    assert "| q8_0 | auto | yes | 0.00400 |" in table and "1.05 x" in table and "| nvfp4 |" in table
    png = (tmp_path / "out" / "quality-tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
