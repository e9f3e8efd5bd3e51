"""``hogwild models``, ``eval``, ``report`` and ``bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.cache import KV_HELP
from ..models.registry import DEFAULT_MODEL
from ..protocol import DEFAULT_FEW_SHOT, DEFAULT_NO_REPEAT_NGRAM
from ..quant.plan import WEIGHTS_HELP, cli_setting
from .app import _default_device, _int_list, _set_threads, app

@app.command()
def models(
    inspect: Optional[str] = typer.Option(
        None, "--inspect", help="Load MODEL and list its super weights (and a GGUF's tensor formats)."),
) -> None:
    """List the models that have short names, and whether each is installed."""
    from ..models.registry import list_models

    if inspect is not None:
        _inspect(inspect)
        return

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


def _inspect(name: str) -> None:
    """``models --inspect``: what the super-weight guard finds, and how a GGUF stores its matrices."""
    from ..models.loading import load_model as load_plain
    from ..quant.plan import gguf_source
    from ..quant.superweights import calibration_ids, find_super_weights

    console = Console(highlight=False)
    with Console(stderr=True).status(f"loading {name} ..."):
        loaded = load_plain(name, dtype="float32")
    gguf = gguf_source(name)
    if gguf is not None:
        from gguf import GGMLQuantizationType

        from ..quant.gguf_file import read_file

        counts: dict[str, int] = {}
        for tensor in read_file(gguf)[1]:
            kind = GGMLQuantizationType(tensor.ggml_type).name
            counts[kind] = counts.get(kind, 0) + 1
        console.print(f"{gguf.name}: " + ", ".join(f"{k} x {v}" for k, v in sorted(counts.items())))
    if loaded.tokenizer is None:
        console.print("no tokenizer: no calibration text, no super-weight search")
        return
    found = find_super_weights(loaded.model, calibration_ids(loaded.tokenizer))
    table = Table(title=f"super weights of {name} (down_proj; calibration: 256 tokens of the shipped text)",
                  title_justify="left")
    for column, justify in (("layer", "right"), ("row", "right"), ("column", "right"), ("value", "right"),
                            ("input", "right"), ("spike", "right"), ("token", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for s in found:
        table.add_row(str(s.layer), str(s.row), str(s.col), f"{s.value:+.4f}", f"{s.activation:+.1f}",
                      f"{s.spike:+.1f}", str(s.token))
    console.print(table)
    if not found:
        console.print("no layer's down_proj output spikes: nothing for the guard to keep")


# ---------------------------------------------------------------------------- eval, report


@app.command("eval", context_settings={"allow_extra_args": True})
def eval_(
    ctx: typer.Context,
    dataset: str = typer.Option("gsm_symbolic", "--dataset", "-d",
                                help="reasoning-gym generator, hub dataset (gsm8k, limo, math-500, aime) or JSON/JSONL file."),
    strategies: str = typer.Option("single,early-stop,independent,hogwild-combined", "--strategies", "-s",
                                   help="Comma list: single, early-stop, independent, hogwild-combined|interleaved|contiguous|orchestrated|verified."),
    workers: str = typer.Option("2", "--workers", "-n", help="Worker counts for multi-worker strategies, e.g. 2,4."),
    budgets: str = typer.Option("64,128,256,512", "--budgets", "-b", help="Budgets in forward passes."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Deprecated: the old name of --weights."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    kv: str = typer.Option("auto", "--kv", help=KV_HELP),
    limit: int = typer.Option(12, "--limit", help="Number of tasks (bundles when --bundle > 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for generated datasets and sampling."),
    bundle: int = typer.Option(1, "--bundle", "-k", help="Join K questions into one task."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy (independent then samples at 0.7)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold."),
    forced_tokens: int = typer.Option(32, "--forced-tokens", help="Max tokens of a forced answer."),
    check_in_every: int = typer.Option(1024, "--check-in-every", help="Hogwild check-in period in tokens (0 = off)."),
    few_shot: bool = typer.Option(bool(DEFAULT_FEW_SHOT), "--few-shot/--no-few-shot",
                                  help="Hogwild few-shot examples (default: off)."),
    redirect_loops: bool = typer.Option(True, "--redirect-loops/--no-redirect-loops",
                                        help="Redirect a hogwild worker whose step repeats an earlier step."),
    no_repeat_ngram: int = typer.Option(DEFAULT_NO_REPEAT_NGRAM, "--no-repeat-ngram",
                                        help="No hogwild worker writes an N-gram already in a step (0 = off)."),
    question_field: Optional[str] = typer.Option(None, "--question-field", help="Field of the question in a file."),
    answer_field: Optional[str] = typer.Option(None, "--answer-field", help="Field of the answer in a file."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Field of the id in a file."),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o", help="Output directory (resumes if it exists)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Engine runs in flight at once, in one batch (results do not depend on it)."),
    reproducible: bool = typer.Option(True, "--reproducible/--no-reproducible", help="Only batch-invariant paths (off: runs share model calls on every path)."),
    ray: bool = typer.Option(False, "--ray", help="--ray [ADDRESS]: spread the units over Ray actors; ADDRESS 'auto' joins the cluster of `ray start`, HOST:6379 that head node's cluster, none starts a local cluster (docs/scale-out.md)."),
    ray_actors: int = typer.Option(2, "--ray-actors", help="With --ray: number of actors (each loads the model once)."),
    ray_gpus_per_actor: float = typer.Option(0.0, "--ray-gpus-per-actor", help="With --ray: GPUs each actor reserves (> 0: actors run on cuda)."),
    ray_cpus_per_actor: float = typer.Option(1.0, "--ray-cpus-per-actor", help="With --ray: CPUs each actor reserves."),
) -> None:
    """Accuracy against forward-pass budget for each strategy; resumable (see docs/eval.md)."""
    from ..errors import InvalidRequestError
    from ..eval.runner import EvalConfig, evaluate

    if len(ctx.args) > (1 if ray else 0):
        raise InvalidRequestError(f"unexpected argument(s) {' '.join(ctx.args)} (only --ray takes an ADDRESS after it)")

    config = EvalConfig(
        dataset=dataset, strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        workers=_int_list(workers, "--workers"), budgets=_int_list(budgets, "--budgets"), model=model,
        dtype=_eval_weights(weights, dtype, model, device), limit=limit, seed=seed, bundle=bundle, temperature=temperature, top_p=top_p,
        forced_tokens=forced_tokens, check_in_every=check_in_every, few_shot=few_shot,
        redirect_loops=redirect_loops, no_repeat_ngram=no_repeat_ngram, question_field=question_field, answer_field=answer_field, id_field=id_field,
        kv=kv)
    _set_threads(threads)
    if ray:
        from ..eval.ray_runner import RayOptions, evaluate_ray

        options = RayOptions(address=ctx.args[0] if ctx.args else None, actors=ray_actors,
                             cpus_per_actor=ray_cpus_per_actor, gpus_per_actor=ray_gpus_per_actor,
                             concurrency=concurrency, threads=threads, device=device, reproducible=reproducible)
        evaluate_ray(config, out, options, console=Console())
        return
    evaluate(config, out, console=Console(), device=device or _default_device(), concurrency=concurrency,
             reproducible=reproducible)


@app.command()
def report(
    directory: Path = typer.Argument(..., help="An output directory of `hogwild eval`."),
) -> None:
    """Rebuild the summary table, summary.json and the plot from DIR/results.jsonl."""
    from ..eval.report import report as build

    build(directory, console=Console())


def _eval_weights(weights: Optional[str], dtype: Optional[str], model: str, device: Optional[str]) -> str:
    """The concrete weight setting an evaluation records in its config.json (``auto``
    resolved for this model and device; float settings under their old dtype names, so a
    directory made before ``--weights`` existed resumes)."""
    from ..loader import decide_weights
    from ..quant.plan import recorded_name

    return recorded_name(decide_weights(cli_setting(weights, dtype), model, device or _default_device()))


# ---------------------------------------------------------------------------- quality
@app.command()
def quality(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Short name, local dir, .gguf file or hub id."),
    weights: str = typer.Option("native,q8_0,q4_k,mxfp4,nvfp4", "--weights",
                                help="Comma list of weight formats to compare with the bf16 model."),
    tokens: int = typer.Option(2048, "--tokens", help="Tokens of the shipped text to score."),
    guard: str = typer.Option("both", "--guard", help="Super-weight guard for quantize-on-load formats: both, on, off."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    out: Path = typer.Option(Path("quality-out"), "--out", "-o", help="Directory for quality-<model>.json and .md."),
    window: Optional[int] = typer.Option(None, "--window", help="Score as llama-perplexity -c N does: windows of N "
                                         "tokens, the second half of each (default: one sequence, every position)."),
    llama_cpp: Optional[Path] = typer.Option(None, "--llama-cpp", help="Folder with llama.cpp's llama-quantize and "
                                             "llama-perplexity: its KL for the same formats, next to ours (needs --window)."),
    kv: str = typer.Option("", "--kv", help="Comma list of KV settings (e.g. int8) to compare, on the bf16 model, "
                           "with its cache kept in bf16."),
) -> None:
    """Mean KL divergence and perplexity of each weight format against the bf16 model (docs/quantization.md)."""
    from ..errors import InvalidRequestError
    from ..quant.plan import parse_weights
    from ..bench.quality import measure, write

    from ..core.cache import check_kv

    formats = [parse_weights(w) for w in weights.split(",") if w.strip()]
    kv_modes = [k.strip() for k in kv.split(",") if k.strip()]
    for mode in kv_modes:
        check_kv(mode)
    if (not formats and not kv_modes) or "auto" in formats:
        raise InvalidRequestError("--weights: name the formats to compare, e.g. native,q4_k,nvfp4")
    if guard not in ("both", "on", "off"):
        raise InvalidRequestError(f"--guard: both, on or off (got {guard!r})")
    if tokens < 2:
        raise InvalidRequestError(f"--tokens must be at least 2 (got {tokens})")
    if window is not None and not 4 <= window <= tokens:
        raise InvalidRequestError(f"--window must be from 4 to --tokens ({tokens}); got {window}")
    if llama_cpp is not None and window is None:
        raise InvalidRequestError("--llama-cpp needs --window: llama-perplexity scores windows, e.g. --window 512")
    _set_threads(threads)
    console = Console(highlight=False)
    doc = measure(model, formats, tokens=tokens, guard=guard, log=lambda line: console.print(line, style="dim"),
                  window=window, llama_cpp=llama_cpp, threads=threads, kv=kv_modes)
    path = write(doc, out)
    console.print((out / path.name.replace(".json", ".md")).read_text())
    console.print(f"written: {path}", style="dim")


# ---------------------------------------------------------------------------- bench
def _weights_list(weights: Optional[str], dtypes: Optional[str]) -> list[str]:
    """``bench --weights`` (``--dtypes`` its old name: one list, given once)."""
    from ..errors import InvalidRequestError

    if weights is not None and dtypes is not None:
        raise InvalidRequestError("give --weights or its old name --dtypes, not both")
    if dtypes is not None:
        import sys

        print("note: --dtypes is deprecated; it is the old name of --weights", file=sys.stderr)
    text = weights if weights is not None else dtypes if dtypes is not None else "float32,bfloat16"
    return [d.strip() for d in text.split(",") if d.strip()]


@app.command()
def bench(
    workers: str = typer.Option("1,2,4,8", "--workers", "-n", help="Worker counts, e.g. 1,2,4,8."),
    runs: str = typer.Option("1", "--runs", help="Run counts R: R runs of N workers in one batch, e.g. 1,8."),
    shared_prefix: int = typer.Option(0, "--shared-prefix", help="Prompt tokens every run shares (0, or >= 16)."),
    unique_suffix: int = typer.Option(0, "--unique-suffix", help="Instead: runs share all but their last T prompt tokens."),
    attention: str = typer.Option("auto", "--attention", help="Our engine's attention path: auto, torch or triton."),
    graphs: bool = typer.Option(True, "--graphs/--no-graphs", help="CUDA graphs for decode passes (CUDA only)."),
    kv: str = typer.Option("auto", "--kv", help=KV_HELP),
    contexts: str = typer.Option("256,1024,4096", "--contexts", "-c", help="Shared prompt lengths in tokens."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="Comma list of weight formats: float32, bfloat16, native, q8_0, q4_k, mxfp4, nvfp4 "
        "(default float32,bfloat16)."),
    dtypes: Optional[str] = typer.Option(None, "--dtypes", help="Deprecated: the old name of --weights."),
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
    llama_cpp: Optional[Path] = typer.Option(None, "--llama-cpp", help="Folder with llama-batched-bench: time llama.cpp "
                                             "on the model's GGUF in the same run (R = 1 rows get a ratio column)."),
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
        unique_suffix=unique_suffix, attention=attention, graphs=graphs, kv=kv,
        transformers_max_rows=transformers_max_rows, transformers_max_context=transformers_max_context,
        contexts=_int_list(contexts, "--contexts"),
        dtypes=_weights_list(weights, dtypes), passes=passes, rounds=rounds,
        warmup=warmup, threads=threads, device=device, transformers=transformers,
        bandwidth_mb=bandwidth_mb, matmul_size=matmul_size, profile=profile, seed=seed,
        llama_cpp=str(llama_cpp) if llama_cpp else None,
    )
    bench_main(cfg, out, Console(highlight=False))
