"""What a benchmark run shows and writes: the rich tables, ``bench.json`` and ``bench.png``.

Everything here reads only the result document of :func:`hogwild.bench.runner.run_bench`, so a
stored ``bench.json`` can be shown again without re-running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _mb(x: float) -> str:
    return f"{x / 2**20:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _runs(r: dict[str, Any]) -> int:
    return r.get("runs", 1)  # an older JSON has no runs axis: R = 1


def _rows(r: dict[str, Any]) -> str:
    """Rows per pass; with the number of model calls when the rows needed more than one."""
    rows = r.get("rows_per_pass", r["workers"] * _runs(r))
    calls = r.get("model_calls", 1)
    return f"{rows}" if calls <= 1 else f"{rows} ({calls} calls)"


def _order(doc: dict[str, Any]) -> list[dict[str, Any]]:
    order = {d: i for i, d in enumerate(dict.fromkeys(r["dtype"] for r in doc["results"]))}
    return sorted(doc["results"], key=lambda r: (order[r["dtype"]], r["context"], r["workers"], _runs(r),
                                                 r["impl"] != "ours"))


def results_table(doc: dict[str, Any]) -> Any:
    """A rich Table of every variant."""
    from rich.table import Table

    hw = doc["hardware"]
    title = (f"hogwild bench · {doc['model']} · {hw['device']} · {hw['threads']} threads · "
             f"bandwidth {hw['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s at start")
    if hw.get("native_kernels"):
        title += f" · native kernels: {hw['native_kernels']}"
    shared = doc["settings"].get("shared_prefix", 0)
    if shared:
        title += f" · shared prefix {shared} tokens"
    if not doc.get("gpu_run"):
        title += " · CPU run (GPU not run)"
    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("dtype", "left"), ("ctx", "right"), ("N", "right"), ("R", "right"), ("impl", "left"),
        ("rows", "right"), ("ms/pass", "right"), ("tok/s", "right"), ("pass/s", "right"),
        ("floor ms", "right"), ("x floor", "right"), ("x N=1", "right"), ("x R=1", "right"),
        ("x transf.", "right"), ("KV use MB", "right"), ("KV min MB", "right"), ("KV alloc MB", "right"),
        ("setup MB", "right"),
    ] + ([("x llama.cpp", "right")] if doc.get("llama_cpp") else []):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in _order(doc):
        llama = [_ratio(r.get("vs_llama_cpp"))] if doc.get("llama_cpp") else []
        table.add_row(
            r["dtype"], str(r["context"]), str(r["workers"]), str(_runs(r)), r["impl"], _rows(r),
            f"{r['ms_per_pass']:.2f}", f"{r['tokens_per_s']:.1f}", f"{r['passes_per_s']:.1f}",
            f"{r['floor_ms']:.2f}{'b' if r['floor_bound'] == 'bandwidth' else 'c'}",
            _ratio(r["vs_floor"]), _ratio(r["vs_n1"]), _ratio(r.get("vs_r1")), _ratio(r["vs_transformers"]),
            _mb(r["kv_bytes_in_use"]), _mb(r["kv_bytes_min"]), _mb(r["kv_bytes_allocated"]),
            _mb(r["setup_mem_bytes"]), *llama,
        )
    return table


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The throughput view, per (dtype, context): each implementation's best tokens/s over all
    runs and the R x N it was reached at, against a single run (N, R = 1 with the same N);
    and, with a shared prefix, ours' K/V in use against R separate copies."""
    lines = []
    groups = dict.fromkeys((r["dtype"], r["context"]) for r in doc["results"])
    for dtype, context in groups:
        rows = [r for r in doc["results"] if (r["dtype"], r["context"]) == (dtype, context)]
        parts = []
        for impl in ("ours", "transformers"):
            mine = [r for r in rows if r["impl"] == impl]
            if not mine:
                continue
            best = max(mine, key=lambda r: r["tokens_per_s"])
            single = next((r for r in mine if r["workers"] == best["workers"] and _runs(r) == 1), None)
            gain = f", {best['tokens_per_s'] / single['tokens_per_s']:.2f} x R=1" if single and _runs(best) > 1 else ""
            parts.append(f"{impl} {best['tokens_per_s']:.0f} tok/s at R x N = {_runs(best)} x {best['workers']}{gain}")
        lines.append(f"throughput {dtype} ctx {context}: " + "; ".join(parts))
    shared = doc["settings"].get("shared_prefix", 0)
    for r in _order(doc):
        if shared and r["impl"] == "ours" and _runs(r) > 1:
            saved = r["kv_bytes_min"] - r["kv_bytes_in_use"]
            lines.append(
                f"shared prefix {shared} tokens, {r['dtype']} ctx {r['context']} N={r['workers']} R={_runs(r)}: "
                f"KV in use {_mb(r['kv_bytes_in_use'])} MB vs {_mb(r['kv_bytes_min'])} MB for {_runs(r)} separate "
                f"copies (saves {_mb(saved)} MB, {100 * saved / r['kv_bytes_min']:.0f}%)")
    for t in doc.get("llama_cpp") or []:
        ms = "  ".join(f"N={n} {v:.2f}" for n, v in t["ms"].items())
        note = f"; {t['note']}" if t.get("note") else ""
        lines.append(f"llama.cpp ms/pass on {t['gguf']}, ctx {t['context']}: {ms}  ({t['cmd']}{note})")
    for s in doc.get("skipped", []):
        lines.append(f"skipped {s['impl']} N={s['workers']} R={s['runs']} ctx {s['context']} {s['dtype']}: "
                     f"{s['reason']}")
    return lines


def profile_table(doc: dict[str, Any]) -> Any | None:
    """The top torch ops of the profiled pass (None when the run made no profile)."""
    from rich.table import Table

    p = doc.get("profile")
    if not p:
        return None
    table = Table(
        title=(f"profile: ours N={p['workers']} R={p.get('runs', 1)} ctx {p['context']} {p['dtype']} · "
               f"{p['wall_ms_per_pass']:.2f} ms/pass under the profiler, {p['ops_ms_per_pass']:.2f} ms in "
               f"torch ops · outside ops: {100 * p['overhead_share']:.0f}%"),
        title_justify="left",
    )
    table.add_column("torch op", no_wrap=True)
    table.add_column("calls/pass", justify="right")
    table.add_column("ms/pass", justify="right")
    table.add_column("share", justify="right")
    for row in p["top_ops"]:
        table.add_row(row["op"], f"{row['calls_per_pass']:.0f}", f"{row['ms_per_pass']:.3f}",
                      f"{100 * row['share']:.1f}%")
    return table


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Written to a temporary file, then renamed: an interrupted write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_png(doc: dict[str, Any], path: Path) -> None:
    """One column per dtype. Top: time per pass vs. context (log-log), one line per (impl, N,
    R); dotted: ours' floor. Bottom: throughput (tokens/s over all runs) vs. R x N rows per
    pass (log-log), one line per (impl, context), each point labelled R x N; dotted: the
    tokens/s of ours at its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    cols = max(1, len(dtypes))
    fig, axes = plt.subplots(2, cols, figsize=(6.5 * cols, 9.6), squeeze=False)
    combos = sorted({(r["workers"], _runs(r)) for r in results})
    several_runs = len({r for _, r in combos}) > 1
    colors = plt.get_cmap("viridis")
    title = f"{doc['model']} · {{}} · {doc['hardware']['device']} · {doc['hardware']['threads']} threads"
    for ax, dt in zip(axes[0], dtypes):
        for i, (n, runs) in enumerate(combos):
            color = colors(i / max(1, len(combos) - 1) * 0.85)
            name = f"N={n}" + (f" R={runs}" if several_runs else "")
            mine = [r for r in results if r["dtype"] == dt and (r["workers"], _runs(r)) == (n, runs)]
            for impl, style in (("ours", "-"), ("transformers", "--")):
                pts = sorted((r["context"], r["ms_per_pass"]) for r in mine if r["impl"] == impl)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{impl} {name}")
            floor = sorted((r["context"], r["floor_ms"]) for r in mine if r["impl"] == "ours")
            if floor:
                ax.plot(*zip(*floor), ":", marker="x", color=color, alpha=0.7, label=f"floor (ours) {name}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        contexts = sorted({r["context"] for r in results})
        ax.set_xticks(contexts, [str(c) for c in contexts])
        ax.minorticks_off()
        ax.set_xlabel("context (prompt tokens per run)")
        ax.set_ylabel("ms per forward pass (all runs)")
        ax.set_title(title.format(dt))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    for ax, dt in zip(axes[1], dtypes):
        _throughput_panel(ax, [r for r in results if r["dtype"] == dt], colors)
        ax.set_title(title.format(dt) + " · throughput")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _throughput_panel(ax: Any, results: list[dict[str, Any]], colors: Any) -> None:
    """Tokens/s vs. R x N for one dtype: a line per (impl, context); dotted: ours' floor."""
    contexts = sorted({r["context"] for r in results})
    for i, context in enumerate(contexts):
        color = colors(i / max(1, len(contexts) - 1) * 0.85)
        for impl, style in (("ours", "-"), ("transformers", "--")):
            mine = sorted((r for r in results if r["context"] == context and r["impl"] == impl),
                          key=lambda r: (r["workers"] * _runs(r), _runs(r)))
            if not mine:
                continue
            xs = [r["workers"] * _runs(r) for r in mine]
            ax.plot(xs, [r["tokens_per_s"] for r in mine], style, marker="o", color=color,
                    label=f"{impl} ctx {context}")
            for x, r in zip(xs, mine):
                ax.annotate(f"{_runs(r)}x{r['workers']}", (x, r["tokens_per_s"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
            if impl == "ours":
                ax.plot(xs, [x / r["floor_ms"] * 1e3 for x, r in zip(xs, mine)], ":", marker="x", color=color,
                        alpha=0.7, label=f"floor (ours) ctx {context}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({r["workers"] * _runs(r) for r in results})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("rows per pass: R runs x N workers (labels: R x N)")
    ax.set_ylabel("generated tokens per second (all runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def print_report(doc: dict[str, Any], console: Any) -> None:
    """Both tables and the legend of the ratio columns."""
    if not console.is_terminal:  # piped or captured: never squeeze the columns
        from rich.console import Console

        console = Console(file=console.file, width=240, highlight=False)
    console.print(results_table(doc))
    for line in summary_lines(doc):
        console.print(line, highlight=False)
    prof = profile_table(doc)
    if prof is not None:
        console.print(prof)
    if not doc.get("gpu_run"):
        console.print("GPU: not run in this benchmark (CPU only).", style="yellow")
    console.print(
        "x floor = ms/pass over max(bytes read / bandwidth measured between the timing rounds, FLOPs / matmul rate) "
        "(b = bandwidth-bound, c = compute-bound); x N=1 = same impl and R, N=1; x R=1 = same impl and N, R=1; "
        "x transf. = ours / transformers at the same N, R, context, dtype; "
        "rows = new tokens per pass (R runs x N workers); tok/s = rows / time per pass.", style="dim",
    )
