"""Chat-template glue: render a system + user turn, BOS handling, end-of-turn token ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                "<end_of_turn>", "<|end|>", "</s>", "<|eom_id|>")


def thinking_open(text: str) -> bool:
    start = text.rfind("<think>")
    return start >= 0 and text.find("</think>", start) < 0


def encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))
    return encode


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """Prepend BOS when the tokenizer normally adds one and the template did not."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or (ids and ids[0] == bos):
        return ids
    try:
        probe = list(tokenizer.encode("a", add_special_tokens=True))
    except Exception:  # noqa: BLE001 - a minimal tokenizer without this option
        return ids
    if probe and probe[0] == bos:
        return [bos] + ids
    return ids


def stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a worker: EOS and the usual end-of-turn tokens of the vocab."""
    found: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for value in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if isinstance(value, int) and value not in found:
            found.append(value)
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # noqa: BLE001
        vocab = {}
    for token in _STOP_TOKENS:
        idx = vocab.get(token)
        if isinstance(idx, int) and idx not in found:
            found.append(idx)
    return found


def _template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return " ".join(str(t) for t in template.values())
    return template or ""


def render_chat(tokenizer: Any, system: str, user: str, thinking: bool | None = None) -> str:
    """Render a system + user turn with the tokenizer's chat template, opening the
    assistant's turn.

    * Templates that reject a system role, or silently drop it, get the system text at the
      top of the user turn.
    * Tokenizers without a chat template get a plain-text layout.
    * Reasoning templates (they mention ``<think>``): unless ``thinking`` is False, the
      assistant turn is made to start inside an open ``<think>`` section, since the
      workers' steps are the model's reasoning. Templates with an ``enable_thinking``
      switch get it set accordingly.
    The result always ends with whitespace, so the first step header starts a line.
    """
    template = _template_text(tokenizer)
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if "enable_thinking" in template:
        kwargs["enable_thinking"] = thinking is not False
    probe = system.strip()[:200]
    text: str | None = None
    if template:
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                **kwargs)
            if isinstance(rendered, str) and probe in rendered:
                text = rendered
        except Exception:  # noqa: BLE001 - templates raise all kinds of errors
            text = None
        if text is None:
            try:
                rendered = tokenizer.apply_chat_template(
                    [{"role": "user", "content": system + "\n\n" + user}], **kwargs)
                if isinstance(rendered, str):
                    text = rendered
            except Exception:  # noqa: BLE001
                text = None
    if text is None:
        text = f"{system}\n\n{user}\n\nSolution:\n"
    if "<think>" in template and thinking is not False and not thinking_open(text):
        if not text.endswith("\n"):
            text += "\n"
        text += "<think>\n"
    if not text[-1:].isspace():
        text += "\n"
    return text


def prefix_ends(tokenizer: Any, text: str, ids: list[int], tail: str) -> list[int]:
    """Where the shareable parts of a prompt end, in tokens: before ``tail`` (the problem's
    own text: everything before it is the same for every problem) and before the last token
    (everything but it is the same for every run on this problem).

    Token boundaries are found by encoding the text before ``tail`` on its own and keeping
    the tokens it has in common with the whole prompt's (a merge across the boundary ends
    the shared part one token earlier)."""
    cut = text.rfind(tail) if tail else -1
    ends = []
    if cut > 0:
        head = with_bos(tokenizer, encoder(tokenizer)(text[:cut]))
        common = 0
        for a, b in zip(head, ids):
            if a != b:
                break
            common += 1
        ends.append(min(common, len(head) - 1))
    ends.append(len(ids) - 1)
    return ends
