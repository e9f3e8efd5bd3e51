"""KV bytes of 8 runs x 2 workers with a 2048-token common prefix, against 8 separate copies.

    python bench/prefix_kv.py
"""
import random, torch
torch.set_num_threads(2)
from hogwild.loader import load_model
from hogwild.core.batch import Batch
from hogwild.core.engine import Engine
from hogwild.core.script import Script
from hogwild.core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED
lm = load_model("smollm2-135m", dtype="bfloat16")
rng = random.Random(0)
common = [rng.randrange(100, 40000) for _ in range(2048)]
batch = Batch(lm.model)
runs = []
for r in range(8):
    ids = common + [rng.randrange(100, 40000) for _ in range(64)]
    s = Script(prompt_ids=ids, opening_ids=[[rng.randrange(100, 40000)] for _ in range(2)], shared_prefix=2048,
               constants={OTHERS_HEADER: [11, 12, 13], OWN_HEADER: [14, 15, 16], UNFINISHED: [17, 18]})
    runs.append(Engine(lm.model, "combined", batch=batch).start(s))
for _ in range(4): batch.step()
load = batch.load()
separate = sum(r.stats().kv_bytes_in_use for r in runs)
print(f"8 runs x 2 workers, 2048-token common prefix + 64 own tokens, 4 passes: KV in use {load.kv_bytes_in_use/1e6:.1f} MB, "
      f"8 separate copies {separate/1e6:.1f} MB, ratio {load.kv_bytes_in_use/separate:.3f}; prefix counted once: "
      f"{load.kv_tokens_in_use == sum(r.tokens_stored() for r in runs) - 7*2048}")
