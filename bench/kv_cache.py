"""Compact KV cache: bytes and time per decode pass with ``--kv int8`` against the model's
own KV dtype, at long contexts, in one run (round-robin, so both see the same machine load).

One run of N workers over a random prompt of C tokens (the prompt is the finished part the
int8 cache compacts; the workers' steps stay in the model's dtype), for every (C, N): KV
bytes in use, ms per pass (median of the rounds), and the ratios int8 / auto. Writes
``kv-cache-<model>.json`` and a PNG next to it.

    python bench/kv_cache.py --model smollm2-135m --weights bf16 --contexts 4096,16384 \
        --workers 1,4 --out docs/results/kv-cache
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hogwild.bench.config import BenchConfig
from hogwild.bench.variants import OursVariant, load_models, run_prompts

MODES = ("auto", "int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="bf16")
    ap.add_argument("--contexts", default="4096,16384")
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--passes", type=int, default=8, help="timed passes per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("kv-cache-out"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    workers = [int(n) for n in args.workers.split(",")]
    cfg = BenchConfig(model=args.model, transformers=False, threads=args.threads)
    models = load_models(cfg, torch.float32, torch.device("cpu"), weights=args.weights)
    rows = []
    for context in contexts:
        prompt = run_prompts(models.config.vocab_size, context, 1, 0, seed=context)
        variants = {}
        for n in workers:
            for mode in MODES:
                v = OursVariant(models, n, context, prompt, torch.device("cpu"), kv=mode)
                t0 = time.perf_counter()
                v.setup()
                print(f"context {context} N={n} kv {mode}: set up in {time.perf_counter() - t0:.1f} s", flush=True)
                for _ in range(2):
                    v.step()
                variants[(n, mode)] = v
        for _ in range(args.rounds):
            for v in variants.values():
                for _ in range(args.passes):
                    t0 = time.perf_counter()
                    v.step()
                    v.times.append(time.perf_counter() - t0)
        for (n, mode), v in variants.items():
            s = v.stats()
            rows.append(dict(context=context, workers=n, kv=mode, ms_per_pass=statistics.median(v.times) * 1e3,
                             ms_min=min(v.times) * 1e3, kv_bytes_in_use=s["kv_bytes_in_use"],
                             kv_bytes_read=s["kv_bytes_read"], kv_bytes_allocated=s["kv_bytes_allocated"]))
            v.close()
        del variants
    by = {(r["context"], r["workers"], r["kv"]): r for r in rows}
    for r in rows:
        if r["kv"] != "auto":
            base = by[(r["context"], r["workers"], "auto")]
            r["time_vs_auto"] = r["ms_per_pass"] / base["ms_per_pass"]
            r["bytes_vs_auto"] = r["kv_bytes_in_use"] / base["kv_bytes_in_use"]
    doc = dict(model=models.name, weights=args.weights, threads=args.threads, passes=args.passes,
               rounds=args.rounds, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
               command="python bench/kv_cache.py " + " ".join(
                   f"--{k} {v}" for k, v in vars(args).items()), results=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"kv-cache-{args.model}-{args.weights}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("| context | N | KV | ms/pass | KV MB in use | x auto (time) | x auto (bytes) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['context']} | {r['workers']} | {r['kv']} | {r['ms_per_pass']:.1f} | {r['kv_bytes_in_use'] / 1e6:.1f} | "
              f"{r.get('time_vs_auto', 1.0):.2f} | {r.get('bytes_vs_auto', 1.0):.2f} |")
    plot(doc, args.out / f"{stem}.png")


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    rows = doc["results"]
    for i, n in enumerate(sorted({r["workers"] for r in rows})):
        for mode, style in (("auto", "-"), ("int8", "--")):  # one colour per N, dashed: int8
            pts = sorted((r["context"], r["ms_per_pass"], r["kv_bytes_in_use"]) for r in rows
                         if r["workers"] == n and r["kv"] == mode)
            kw = dict(marker="o", color=f"C{i}", label=f"N={n} KV {mode}")
            a.plot([p[0] for p in pts], [p[1] for p in pts], style, **kw)
            b.plot([p[0] for p in pts], [p[2] / 1e6 for p in pts], style, **kw)
    a.set(xscale="log", xlabel="context (tokens)", ylabel="ms per pass", title="time per decode pass")
    b.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="KV MB in use", title="KV bytes")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{doc['model']} ({doc['weights']} weights, {doc['threads']} threads): KV int8 vs the model's dtype")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
