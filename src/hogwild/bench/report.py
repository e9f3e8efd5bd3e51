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


def results_table(doc: dict[str, Any]) -> Any:
    """A rich Table of every variant."""
    from rich.table import Table

    hw = doc["hardware"]
    title = (f"hogwild bench · {doc['model']} · {hw['device']} · {hw['threads']} threads · "
             f"bandwidth {hw['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s at start")
    if hw.get("native_kernels"):
        title += f" · native kernels: {hw['native_kernels']}"
    if not doc.get("gpu_run"):
        title += " · CPU run (GPU not run)"
    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("dtype", "left"), ("ctx", "right"), ("N", "right"), ("impl", "left"), ("ms/pass", "right"),
        ("tok/s", "right"), ("pass/s", "right"), ("floor ms", "right"), ("x floor", "right"),
        ("x N=1", "right"), ("x transf.", "right"), ("KV use MB", "right"), ("KV min MB", "right"),
        ("KV alloc MB", "right"), ("setup MB", "right"),
    ]:
        table.add_column(name, justify=justify, no_wrap=True)
    order = {d: i for i, d in enumerate(dict.fromkeys(r["dtype"] for r in doc["results"]))}
    rows = sorted(doc["results"], key=lambda r: (order[r["dtype"]], r["context"], r["workers"], r["impl"] != "ours"))
    for r in rows:
        table.add_row(
            r["dtype"], str(r["context"]), str(r["workers"]), r["impl"], f"{r['ms_per_pass']:.2f}",
            f"{r['tokens_per_s']:.1f}", f"{r['passes_per_s']:.1f}",
            f"{r['floor_ms']:.2f}{'b' if r['floor_bound'] == 'bandwidth' else 'c'}",
            _ratio(r["vs_floor"]), _ratio(r["vs_n1"]), _ratio(r["vs_transformers"]),
            _mb(r["kv_bytes_in_use"]), _mb(r["kv_bytes_min"]), _mb(r["kv_bytes_allocated"]),
            _mb(r["setup_mem_bytes"]),
        )
    return table


def profile_table(doc: dict[str, Any]) -> Any | None:
    """The top torch ops of the profiled pass (None when the run made no profile)."""
    from rich.table import Table

    p = doc.get("profile")
    if not p:
        return None
    table = Table(
        title=(f"profile: ours N={p['workers']} ctx {p['context']} {p['dtype']} · "
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
    """Time per pass vs. context (log-log), one panel per dtype, one line per (impl, N);
    dotted: ours' floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    fig, axes = plt.subplots(1, max(1, len(dtypes)), figsize=(6.5 * max(1, len(dtypes)), 4.8), squeeze=False)
    workers = sorted({r["workers"] for r in results})
    colors = plt.get_cmap("viridis")
    for ax, dt in zip(axes[0], dtypes):
        for i, n in enumerate(workers):
            color = colors(i / max(1, len(workers) - 1) * 0.85)
            for impl, style in (("ours", "-"), ("transformers", "--")):
                pts = sorted((r["context"], r["ms_per_pass"]) for r in results
                             if r["dtype"] == dt and r["workers"] == n and r["impl"] == impl)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{impl} N={n}")
            floor = sorted((r["context"], r["floor_ms"]) for r in results
                           if r["dtype"] == dt and r["workers"] == n and r["impl"] == "ours")
            if floor:
                ax.plot(*zip(*floor), ":", marker="x", color=color, alpha=0.7, label=f"floor (ours) N={n}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        contexts = sorted({r["context"] for r in results})
        ax.set_xticks(contexts, [str(c) for c in contexts])
        ax.minorticks_off()
        ax.set_xlabel("context (prompt tokens)")
        ax.set_ylabel("ms per forward pass")
        ax.set_title(f"{doc['model']} · {dt} · {doc['hardware']['device']} · {doc['hardware']['threads']} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(doc: dict[str, Any], console: Any) -> None:
    """Both tables and the legend of the ratio columns."""
    if not console.is_terminal:  # piped or captured: never squeeze the columns
        from rich.console import Console

        console = Console(file=console.file, width=200, highlight=False)
    console.print(results_table(doc))
    prof = profile_table(doc)
    if prof is not None:
        console.print(prof)
    if not doc.get("gpu_run"):
        console.print("GPU: not run in this benchmark (CPU only).", style="yellow")
    console.print(
        "x floor = ms/pass over max(bytes read / bandwidth measured between the timing rounds, FLOPs / matmul rate) "
        "(b = bandwidth-bound, c = compute-bound); x N=1 = same impl, N=1; "
        "x transf. = ours / transformers at the same N, context, dtype.", style="dim",
    )
