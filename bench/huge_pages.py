"""Whole decode passes with the weights and KV pools on small pages against huge pages.

One process loads the model twice, once with ``HOGWILD_HUGE_PAGES=0`` (every buffer on the
4 KiB pages ``torch.empty`` gives) and once with huge pages on (the dot-pair weights and
the KV pools through :func:`hogwild.tensors.huge_empty`), then steps fresh engines (a
bench variant: R runs of N workers, prompts of C tokens, the combined layout) of the two in
turn, ``--rounds`` times: 3 passes of warm-up, then ``--passes`` timed, the order
alternating, so both see the same load on a shared machine. Prints best and median ms per
pass of each and their ratio, and how much of the process the kernel gave huge pages
(``AnonHugePages``; 0 where transparent huge pages are off).

With ``--out`` it writes ``huge_pages-<model>-<weights>-<R>x<N>.json`` and a PNG of the
same name (each setting's best and median pass); ``--plot FILE.json ...`` redraws the PNGs of
earlier results.

Usage::

    python bench/huge_pages.py                                   # SmolLM2, 1 run x 16 workers
    python bench/huge_pages.py --model qwen2.5-coder-0.5b --runs 8 --workers 2 --rounds 6
    python bench/huge_pages.py --weights q4_k --out /tmp/huge
    python bench/huge_pages.py --plot docs/results/bench-cpu/huge-pages/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pass_ab import fresh_engine, save_comparison, team_arguments, team_config  # noqa: E402 (a sibling script)

from hogwild.bench.variants import load_models, run_prompts  # noqa: E402

SETTINGS = {"small pages": "0", "huge pages": "1"}


def huge_kib() -> int:
    """KiB of this process's anonymous memory on huge pages (0 where the kernel does not say)."""
    rollup = Path("/proc/self/smaps_rollup")
    if not rollup.exists():
        return 0
    for line in rollup.read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def plot(path: Path) -> Path:
    """A PNG next to a result file: best and median ms per pass on small and huge pages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text())
    meta, results = data["meta"], data["results"]
    names = list(results)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.38
    for i, stat in enumerate(("best_ms", "median_ms")):
        values = [results[n][stat] for n in names]
        bars = ax.bar([x + (i - 0.5) * width for x in range(len(names))], values, width,
                      label=stat.replace("_ms", " pass"))
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("ms per pass")
    ax.set_title(f"{meta['model']} ({meta['weights']}) {meta['runs']} x {meta['workers']}, context "
                 f"{meta['context']}: small / huge {data['ratio_median']:.3f} x (median)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    team_arguments(ap, rounds=8, passes=15)
    ap.add_argument("--out", type=Path, help="folder to write huge_pages.json into")
    ap.add_argument("--plot", type=Path, nargs="+", help="only redraw the PNGs of these result files")
    args = ap.parse_args()
    if args.plot:
        for path in args.plot:
            print(f"wrote {plot(path)}")
        return

    torch.set_num_threads(args.threads)
    cfg = team_config(args)
    before = os.environ.get("HOGWILD_HUGE_PAGES")
    models, huge = {}, {}
    try:
        for name, value in SETTINGS.items():
            os.environ["HOGWILD_HUGE_PAGES"] = value
            start = huge_kib()
            models[name] = load_models(cfg, torch.bfloat16, torch.device("cpu"), weights=args.weights)
            huge[name] = huge_kib() - start
        prompts = run_prompts(models["small pages"].config.vocab_size, args.context, args.runs, 0, 1)
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        load = os.getloadavg()[0]
        for r in range(args.rounds):
            order = list(SETTINGS.items())
            for name, value in order if r % 2 == 0 else order[::-1]:
                os.environ["HOGWILD_HUGE_PAGES"] = value  # the engine's KV pools follow it too
                variant = fresh_engine(models[name], args, prompts)
                for _ in range(args.passes):
                    start = time.perf_counter()
                    variant.step()
                    times[name].append(time.perf_counter() - start)
                variant.close()
    finally:
        if before is None:
            os.environ.pop("HOGWILD_HUGE_PAGES", None)
        else:
            os.environ["HOGWILD_HUGE_PAGES"] = before
    result = {name: dict(best_ms=min(t) * 1e3, median_ms=statistics.median(t) * 1e3, passes=len(t),
                         model_huge_kib=huge[name]) for name, t in times.items()}
    for name, r in result.items():
        print(f"{name:>11}: best {r['best_ms']:.2f} ms  median {r['median_ms']:.2f} ms  ({r['passes']} passes; "
              f"the model's load put {r['model_huge_kib'] / 1024:.0f} MiB on huge pages)")
    small, big = result["small pages"], result["huge pages"]
    ratio_best, ratio_median = small["best_ms"] / big["best_ms"], small["median_ms"] / big["median_ms"]
    print(f"{args.model} ({args.weights}) {args.runs} x {args.workers}, context {args.context}, {args.threads} threads: "
          f"small / huge {ratio_best:.3f} (best), {ratio_median:.3f} (median); load average {load:.2f}")
    if args.out:
        name = f"huge_pages-{args.model}-{args.weights}-{args.runs}x{args.workers}.json"
        path = save_comparison(args, name, result, ratio_best, ratio_median, load)
        print(f"wrote {path} and {plot(path)}")


if __name__ == "__main__":
    main()
