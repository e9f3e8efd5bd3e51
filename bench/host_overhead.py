"""The engine's host work per pass, with the model call stubbed out.

On a GPU the pass itself is a few milliseconds, so what the host does around it (each run's
schedule and complete steps, the GPU plan's pass table) decides how well many runs batch
(docs/results/bench-gpu/README.md, "Where the time goes"). This script measures that host
work alone on any machine: R runs of N workers (combined layout, prompts sharing all but 64
tokens) of the tiny random model in one batch, where the model call only describes the pass
as the GPU plan would (``describe_pass``) and returns random logits. ``--plan kernel`` builds
the CPU decode plan instead (``KernelPlan``: the pair tables the native decoder reads).

    python bench/host_overhead.py --runs 1,8,32 --workers 4
    python bench/host_overhead.py --runs 1 --workers 16 --plan kernel
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from hogwild.bench import BenchConfig  # noqa: E402
from hogwild.bench.variants import OursVariant, load_models, run_prompts  # noqa: E402
from hogwild.core.attention import KernelPlan  # noqa: E402
from hogwild.core.attention.gpu import describe_pass  # noqa: E402


def measure(runs: int, workers: int, context: int, passes: int, plan: str = "gpu") -> dict[str, float]:
    """Milliseconds per pass: in all, and in each stage (schedule, pass table, complete)."""
    models = load_models(BenchConfig(random_weights=True, shape="tiny", transformers=False),
                         torch.float32, torch.device("cpu"))
    prompts = run_prompts(models.config.vocab_size, context, runs, context - 64, 0)
    variant = OursVariant(models, workers, context, prompts, torch.device("cpu"),
                          shared_prefix=context - 64, attention="torch", graphs=False)
    variant.setup()
    batch = variant.batch
    spent = {"schedule": 0.0, "pass table": 0.0, "complete": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - t0
            return out
        return wrapper

    def forward(ids, groups, logit_rows, decode=False):
        if plan == "kernel":
            timed("pass table", KernelPlan)(batch.store, batch.rope, groups)
        else:
            timed("pass table", describe_pass)(batch.store, groups, 66)
        return torch.randn(len(logit_rows), models.config.vocab_size)

    batch.forward = forward
    for run in batch.runs:
        run._schedule = timed("schedule", run._schedule)
        run._complete = timed("complete", run._complete)
    for _ in range(5):
        variant.step()
    for k in spent:
        spent[k] = 0.0
    t0 = time.perf_counter()
    for _ in range(passes):
        variant.step()
    total = (time.perf_counter() - t0) * 1e3 / passes
    variant.close()
    return {"total": total, **{k: v * 1e3 / passes for k, v in spent.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1,8,32")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--passes", type=int, default=30)
    ap.add_argument("--plan", choices=["gpu", "kernel"], default="gpu",
                    help="the pass table to build: the GPU plan's or the CPU kernel plan's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'R':>4} {'N':>3}  ms/pass  schedule  pass table  complete")
    for r in (int(x) for x in args.runs.split(",")):
        m = measure(r, args.workers, args.context, args.passes, args.plan)
        print(f"{r:>4} {args.workers:>3}  {m['total']:7.2f}  {m['schedule']:8.2f}  {m['pass table']:10.2f}"
              f"  {m['complete']:8.2f}")


if __name__ == "__main__":
    main()
