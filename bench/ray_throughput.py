"""Throughput of `hogwild eval --ray`: units per hour with 1 and 2 Ray actors on this machine.

Runs one small evaluation several ways, one after another, in this process (one local Ray
cluster for all; every variant starts fresh actors, which load the model):

- ``local``: the local runner (``evaluate``) with the model already loaded, ``--threads`` T;
- ``ray-1xT``: one actor with T torch threads;
- ``ray-1x1`` and ``ray-2x1``: one and two actors with one thread each (the scaling pair:
  on a machine with C cores, actors x threads <= C keeps them from competing for cores).

Units per hour are counted over the whole call (``total``: cluster start and model loads
included) and once every actor is up (``steady``: the units that reached the driver after
the last actor loaded its model, over the time from then to the last one). Every variant's records are
compared with the local runner's (answers, passes, tokens): ``same_as_local``. Writes
``ray_throughput.json`` into ``--out``. Example (a few minutes on 2 cores)::

    OMP_WAIT_POLICY=PASSIVE python bench/ray_throughput.py --limit 6 --out docs/results/ray

``OMP_WAIT_POLICY=PASSIVE`` (inherited by the actors, whose processes the local cluster
starts from this one): on a machine busier than its cores, OpenMP's default spin-waiting made
the local runner's passes (stepped from the main thread) up to 10x slower than the actors'
(stepped from the actor's worker threads); passive waiting removes that difference, so the
variants compare Ray's scaling, not OpenMP's waiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path


def essence(records: list[dict]) -> dict:
    return {f"{r['task']}|{r['strategy']}|{r['workers']}":
            [(x["budget"], x["answer"], x["passes"], x["tokens"]) for x in r["results"]] for r in records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="basic_arithmetic")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--strategies", default="single,hogwild-combined")
    ap.add_argument("--budgets", default="32,64")
    ap.add_argument("--threads", type=int, default=2, help="T: threads of the local runner and of ray-1xT")
    ap.add_argument("--concurrency", type=int, default=8, help="runs in flight per batch (per actor)")
    ap.add_argument("--variants", default="local,ray-1xT,ray-1x1,ray-2x1")
    ap.add_argument("--out", type=Path, default=Path("docs/results/ray"))
    args = ap.parse_args()

    import ray
    import torch

    from hogwild.eval import report as rep
    from hogwild.eval.ray_runner import RayOptions, evaluate_ray
    from hogwild.eval.runner import EvalConfig, evaluate
    from hogwild.loader import load_model

    def config() -> EvalConfig:
        return EvalConfig(dataset=args.dataset, strategies=args.strategies.split(","), workers=[2],
                          budgets=[int(b) for b in args.budgets.split(",")], model=args.model, limit=args.limit)

    torch.set_num_threads(args.threads)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    results, local = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for index, name in enumerate(args.variants.split(",")):
            out = Path(tmp) / f"{index}-{name}"
            arrivals: list[float] = []  # when each record reached the writer
            fleets: list = []
            t0 = time.perf_counter()
            if name == "local":
                loaded = load_model(args.model, dtype=config().dtype)
                t_ready = time.perf_counter()
                evaluate(config(), out, loaded=loaded, progress=False, concurrency=args.concurrency,
                         on_unit=lambda r, a=arrivals: a.append(time.perf_counter()))
                actors, threads = 0, args.threads
            else:
                actors, threads = {"ray-1xT": (1, args.threads), "ray-1x1": (1, 1), "ray-2x1": (2, 1)}[name]
                options = RayOptions(actors=actors, threads=threads, concurrency=args.concurrency)
                evaluate_ray(config(), out, options, progress=False, on_start=fleets.append,
                             on_unit=lambda r, a=arrivals: a.append(time.perf_counter()))
                t_ready = max(a.ready_at for a in fleets[0].actors)  # every actor up (model loaded)
            end = arrivals[-1]
            records = rep.read_results(out / rep.RESULTS)
            if name == "local":
                local = essence(records)
            steady = [t for t in arrivals if t > t_ready]  # units finished with every actor running
            row = {"variant": name, "actors": actors, "threads_per_actor": threads, "units": len(records),
                   "steady_units": len(steady), "steady_s": round(end - t_ready, 2), "total_s": round(end - t0, 2),
                   "units_per_hour_steady": round(len(steady) * 3600 / (end - t_ready), 1),
                   "units_per_hour_total": round(len(records) * 3600 / (end - t0), 1),
                   "passes": sum(r["passes"] for r in records if not r["timings"].get("shared_decode")),
                   "same_as_local": None if local is None else essence(records) == local}
            results.append(row)
            print(json.dumps(row), flush=True)
    ray.shutdown()
    base = {r["variant"]: r["units_per_hour_steady"] for r in results}  # the last run of a name counts
    ratio = base["ray-2x1"] / base["ray-1x1"] if {"ray-1x1", "ray-2x1"} <= base.keys() else None
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "ray": ray.__version__, "torch": torch.__version__,
                       "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                       "load_average_at_end": os.getloadavg()},
           "settings": {k: str(v) for k, v in vars(args).items()}, "results": results,
           "ratio_2x1_over_1x1_steady": None if ratio is None else round(ratio, 2)}
    (args.out / "ray_throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"2 actors / 1 actor (1 thread each, steady): {ratio}")


if __name__ == "__main__":
    main()
