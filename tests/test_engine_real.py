"""Oracle 2 and store accounting on the real default checkpoint (SmolLM2-135M, fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hogwild.core.engine import Engine
from hogwild.core.script import Script

PROMPTS = [
    "Explain in detail how photosynthesis works.",
    "Write a short poem about the sea.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May? Think step by step.",
]


@pytest.fixture(scope="module")
def hf_model(default_model):
    model = AutoModelForCausalLM.from_pretrained(default_model.source, dtype=torch.float32)
    return model.eval()


def chat_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
        return_dict=False,
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_one_worker_equals_transformers_generate(default_model, hf_model, prompt: str) -> None:
    tok = default_model.tokenizer
    ids = chat_ids(tok, prompt)
    if isinstance(ids, dict):
        ids = ids["input_ids"]
    ids = list(ids)
    new = 64
    with torch.inference_mode():
        ref = hf_model.generate(
            torch.tensor([ids]), max_new_tokens=new, do_sample=False, pad_token_id=tok.eos_token_id,
        )[0, len(ids):].tolist()
    assert len(ref) == new, "choose prompts whose greedy answer is longer than 64 tokens"
    run = Engine(default_model.model, "independent", decode=tok.decode).start(
        Script(prompt_ids=ids, opening_ids=[[]])
    )
    ours = []
    for _ in range(new):
        ev = run.step()
        ours += [e.token for e in ev if hasattr(e, "token")]
    assert ours == ref, (tok.decode(ours), tok.decode(ref))
    assert run.passes == new


def test_store_holds_each_token_once(default_model) -> None:
    """After a run with merges, bytes in use = tokens in views' union x per-token bytes."""
    tok = default_model.tokenizer
    from hogwild.core.layouts import OTHERS_HEADER, OWN_HEADER, UNFINISHED

    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    script = Script(
        prompt_ids=chat_ids(tok, "List three colors, one per paragraph."),
        opening_ids=[enc("**Alice [1]:** "), enc("**Bob [1]:** "), enc("**Carol [1]:** ")],
        header_ids=lambda w, s, c: enc(f"**{'ABC'[w]} [{s}]:** "),
        constants={OTHERS_HEADER: enc("\nothers:\n"), OWN_HEADER: enc("\nyou:\n"), UNFINISHED: enc(" ...\n")},
        is_step_end=lambda t: "\n\n" in t or t.count("\n") >= 2,
    )
    run = Engine(default_model.model, "combined", decode=tok.decode).start(script)
    for _ in range(40):
        run.step()
    stored = sum(len(ids) for ids in run.block_ids.values())
    assert run.store.tokens_in_use() == stored
    per_token = default_model.config.kv_bytes_per_token(4)
    assert run.store.bytes_in_use() == stored * per_token
    # each token once: prompt + constants + everything each worker fed, nothing duplicated
    fed = sum(len(w.all_ids) for w in run.workers) - sum(
        len(t) for w in run.workers for _, t in w.pending
    )
    const = sum(len(v) for v in script.constants.values())
    assert stored == len(script.prompt_ids) + const + fed
    assert len(run.history_order) >= 1
