"""Speed benchmark: our engine vs. transformers decoding vs. the hardware floor.

One call of :func:`run_bench` measures, in ONE process and interleaved so that the ratios are
fair on a noisy shared machine:

- **ours**: time per forward pass of R runs of :class:`~hogwild.core.engine.Run` (combined
  layout, greedy), each N workers over its own prompt of C tokens, all in one
  :class:`~hogwild.core.batch.Batch`: a pass is one ``batch.step()``, R x N new tokens, in one
  model call while they fit the native row limit (R = 1 by default: one run, as before);
- **transformers**: time per decoding step of the transformers implementation of the same
  model and dtype with batch R x N, each run's prompt replicated N times. This is what
  ``generate`` does per step (a forward of one new token per row over a ``DynamicCache``,
  then the greedy pick), written as an explicit loop so that prefill is not mixed in. The
  R prompts are prefilled once at batch R and the cache is repeated N times
  (``batch_repeat_interleave``, as ``generate`` does for ``num_return_sequences``), so every
  row holds its own copy of the prompt's K/V, as it does under ``generate``;
- **floor**: max(bytes read per pass / measured memory bandwidth, FLOPs per pass / measured
  matmul rate), per variant (weights read once per pass; the K/V and FLOPs of all rows).

Throughput (generated tokens per second over all runs) is R x N / time per pass. With a
shared prefix of T tokens every run's prompt starts with the same T tokens, declared as the
script's ``shared_prefix``: ours stores them once, and the K/V in use is reported against R
separate copies (``kv_bytes_min``).

The modules, by job: :mod:`.config` (settings), :mod:`.measure` (hardware probes, the floor
model, the profile), :mod:`.variants` (what is timed), :mod:`.runner` (the timing rounds),
:mod:`.report` (tables, JSON, plot). See ``docs/bench.md`` for what every column means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import FORMAT, VERSION, BenchConfig, dtype_name
from .measure import (
    available_memory, compute_rate, matmul_params, measure_bandwidth, measure_matmul, pass_flops,
    profile_passes, weight_bytes_read,
)
from .report import print_report, profile_table, results_table, summary_lines, write_json, write_png
from .runner import add_ratios, run_bench
from .variants import (
    Models, OursVariant, TransformersVariant, Variant, load_models, model_calls, prompt_ids, random_model,
    run_prompts,
)

__all__ = [
    "FORMAT", "VERSION", "BenchConfig", "Models", "OursVariant", "TransformersVariant", "Variant",
    "add_ratios", "available_memory", "bench_main", "compute_rate", "dtype_name", "load_models",
    "matmul_params", "measure_bandwidth", "measure_matmul", "model_calls", "pass_flops", "print_report",
    "profile_passes", "profile_table", "prompt_ids", "random_model", "results_table", "run_bench",
    "run_prompts", "summary_lines", "weight_bytes_read", "write_json", "write_png",
]


def bench_main(cfg: BenchConfig, out: Path | None, console: Any) -> dict[str, Any]:
    """Run, print, and write ``out/bench.json`` and ``out/bench.png`` (the CLI's body)."""
    doc = run_bench(cfg, console)
    print_report(doc, console)
    if out is not None:
        write_json(doc, out / "bench.json")
        write_png(doc, out / "bench.png")
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}", highlight=False)
    return doc
