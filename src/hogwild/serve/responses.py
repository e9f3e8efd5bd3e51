"""The non-streaming bodies: ``chat.completion`` and ``text_completion`` of a finished run.

Each worker is one choice: its whole text (headers included) is ``reasoning_content`` and
the team's answer is ``content`` (``text`` for completions) of every choice. A top-level
``hogwild`` object adds the answer, how the run ended, its passes and the shared history.
"""

from __future__ import annotations

from typing import Any

from ..solve import SolveResult


def finish_reason(result: SolveResult) -> str:
    """"stop" when the workers answered or ended (or a stop string was written), "length"
    when the budget or the context ran out (the answer is then forced, where enabled)."""
    return "stop" if result.stop_reason in ("eos", "stop-rule") else "length"


def usage(result: SolveResult, prompt_tokens: int) -> dict[str, int]:
    completion = sum(result.generated_tokens)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def hogwild_summary(result: SolveResult, stop_hit: str | None, history: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "answer": result.answer,
        "forced": result.forced,
        "stop_reason": "stop-string" if stop_hit is not None else result.stop_reason,
        "passes": result.passes,
        "workers": result.names,
    }
    if history:
        out["history"] = [{"worker": w, "text": text} for w, text in result.history]
    return out


def chat_body(result: SolveResult, request_id: str, created: int, model: str, prompt_tokens: int,
              stop_hit: str | None) -> dict[str, Any]:
    answer, finish = result.answer or "", finish_reason(result)
    choices = [{"index": w, "message": {"role": "assistant", "content": answer, "reasoning_content": text},
                "logprobs": None, "finish_reason": finish} for w, text in enumerate(result.workers)]
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage(result, prompt_tokens),
            "hogwild": hogwild_summary(result, stop_hit)}


def completion_body(result: SolveResult, request_id: str, created: int, model: str, prompt_tokens: int,
                    stop_hit: str | None) -> dict[str, Any]:
    answer, finish = result.answer or "", finish_reason(result)
    choices = [{"index": w, "text": answer, "reasoning_content": text, "logprobs": None, "finish_reason": finish}
               for w, text in enumerate(result.workers)]
    return {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage(result, prompt_tokens),
            "hogwild": hogwild_summary(result, stop_hit)}
