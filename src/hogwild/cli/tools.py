"""``hogwild models``, ``eval``, ``report`` and ``bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models.registry import DEFAULT_MODEL
from .app import _default_device, _int_list, _set_threads, app

@app.command()
def models() -> None:
    """List the models that have short names, and whether each is installed."""
    from ..models.registry import list_models

    table = Table(title="hogwild models", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("installed", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("description")
    for row in list_models():
        name = row.name + (" (default)" if row.name == DEFAULT_MODEL else "")
        installed = Text("yes", style="green") if row.installed else Text("no", style="red")
        table.add_row(name, installed, row.size, row.description)
    Console().print(table)
    Console().print(
        "Any local directory with config.json, a .gguf file or a hub id also works with --model.",
        style="dim",
    )


# ---------------------------------------------------------------------------- eval, report


@app.command("eval")
def eval_(
    dataset: str = typer.Option("gsm_symbolic", "--dataset", "-d",
                                help="reasoning-gym generator, hub dataset (gsm8k, limo, math-500, aime) or JSON/JSONL file."),
    strategies: str = typer.Option("single,early-stop,independent,hogwild-combined", "--strategies", "-s",
                                   help="Comma list: single, early-stop, independent, hogwild-combined|interleaved|contiguous|orchestrated|verified."),
    workers: str = typer.Option("2", "--workers", "-n", help="Worker counts for multi-worker strategies, e.g. 2,4."),
    budgets: str = typer.Option("64,128,256,512", "--budgets", "-b", help="Budgets in forward passes."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    limit: int = typer.Option(12, "--limit", help="Number of tasks (bundles when --bundle > 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for generated datasets and sampling."),
    bundle: int = typer.Option(1, "--bundle", "-k", help="Join K questions into one task."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy (independent then samples at 0.7)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold."),
    forced_tokens: int = typer.Option(32, "--forced-tokens", help="Max tokens of a forced answer."),
    check_in_every: int = typer.Option(1024, "--check-in-every", help="Hogwild check-in period in tokens (0 = off)."),
    few_shot: Optional[bool] = typer.Option(None, "--few-shot/--no-few-shot", help="Hogwild few-shot examples."),
    redirect_loops: bool = typer.Option(True, "--redirect-loops/--no-redirect-loops",
                                        help="Redirect a hogwild worker whose step repeats an earlier step."),
    question_field: Optional[str] = typer.Option(None, "--question-field", help="Field of the question in a file."),
    answer_field: Optional[str] = typer.Option(None, "--answer-field", help="Field of the answer in a file."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Field of the id in a file."),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o", help="Output directory (resumes if it exists)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Engine runs in flight at once, in one batch (results do not depend on it)."),
    reproducible: bool = typer.Option(True, "--reproducible/--no-reproducible", help="Only batch-invariant paths (off: runs share model calls on every path)."),
) -> None:
    """Accuracy against forward-pass budget for each strategy; resumable (see docs/eval.md)."""
    from ..eval.runner import EvalConfig, evaluate

    config = EvalConfig(
        dataset=dataset, strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        workers=_int_list(workers, "--workers"), budgets=_int_list(budgets, "--budgets"), model=model,
        dtype=dtype, limit=limit, seed=seed, bundle=bundle, temperature=temperature, top_p=top_p,
        forced_tokens=forced_tokens, check_in_every=check_in_every, few_shot=few_shot,
        redirect_loops=redirect_loops, question_field=question_field, answer_field=answer_field, id_field=id_field)
    _set_threads(threads)
    evaluate(config, out, console=Console(), device=device or _default_device(), concurrency=concurrency,
             reproducible=reproducible)


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of `hogwild eval`."),
) -> None:
    """Rebuild the summary table, summary.json and the plot from DIR/results.jsonl."""
    from ..eval.report import report as build

    build(directory, console=Console())


# ---------------------------------------------------------------------------- bench
@app.command()
def bench(
    workers: str = typer.Option("1,2,4,8", "--workers", "-n", help="Worker counts, e.g. 1,2,4,8."),
    runs: str = typer.Option("1", "--runs", help="Run counts R: R runs of N workers in one batch, e.g. 1,8."),
    shared_prefix: int = typer.Option(0, "--shared-prefix", help="Prompt tokens every run shares (0, or >= 16)."),
    unique_suffix: int = typer.Option(0, "--unique-suffix", help="Instead: runs share all but their last T prompt tokens."),
    attention: str = typer.Option("auto", "--attention", help="Our engine's attention path: auto, torch or triton."),
    graphs: bool = typer.Option(True, "--graphs/--no-graphs", help="CUDA graphs for decode passes (CUDA only)."),
    contexts: str = typer.Option("256,1024,4096", "--contexts", "-c", help="Shared prompt lengths in tokens."),
    dtypes: str = typer.Option("float32,bfloat16", "--dtypes", help="Comma list: float32, bfloat16, float16."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id (real weights)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Random weights at a named shape (see --config)."),
    config: Optional[str] = typer.Option(None, "--config", help="Shape for --random-weights: tiny, smollm2-135m, qwen2.5-0.5b, qwen2.5-7b, qwen2.5-32b."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads (fixed for the whole run)."),
    passes: int = typer.Option(8, "--passes", "-k", help="Timed passes per variant per round."),
    rounds: int = typer.Option(3, "--rounds", "-r", help="Round-robin repeats over all variants."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed passes per variant before timing."),
    transformers: bool = typer.Option(True, "--transformers/--no-transformers", help="Also time transformers with batch N."),
    transformers_max_rows: int = typer.Option(0, "--transformers-max-rows", help="... only up to R x N sequences (0: any)."),
    transformers_max_context: int = typer.Option(0, "--transformers-max-context", help="... only up to this context (0: any)."),
    profile: bool = typer.Option(True, "--profile/--no-profile", help="Profile a few engine passes (N near 4, context near 1k)."),
    bandwidth_mb: int = typer.Option(512, "--bandwidth-mb", help="Size of the copy that measures memory bandwidth."),
    matmul_size: int = typer.Option(2048, "--matmul-size", help="n of the n^3 matmul that measures the compute rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random prompts (and random weights)."),
    out: Optional[Path] = typer.Option(Path("bench-out"), "--out", "-o", help="Directory for bench.json and bench.png."),
) -> None:
    """Time per forward pass: our engine vs. transformers batch N vs. the hardware floor (docs/bench.md)."""
    from ..bench import BenchConfig, bench_main

    cfg = BenchConfig(
        model=model, random_weights=random_weights or config is not None, shape=config,
        workers=_int_list(workers, "--workers"), runs=_int_list(runs, "--runs"), shared_prefix=shared_prefix,
        unique_suffix=unique_suffix, attention=attention, graphs=graphs,
        transformers_max_rows=transformers_max_rows, transformers_max_context=transformers_max_context,
        contexts=_int_list(contexts, "--contexts"),
        dtypes=[d.strip() for d in dtypes.split(",") if d.strip()], passes=passes, rounds=rounds,
        warmup=warmup, threads=threads, device=device, transformers=transformers,
        bandwidth_mb=bandwidth_mb, matmul_size=matmul_size, profile=profile, seed=seed,
    )
    bench_main(cfg, out, Console(highlight=False))
