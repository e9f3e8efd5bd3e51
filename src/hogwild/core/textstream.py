"""Incremental detokenization: emit text once it is stable (no half UTF-8 characters)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalDecoder:
    """Decodes a growing token list in O(window) per token, not O(length).

    Keeps a small window of already-emitted tokens as left context, because many tokenizers
    decode a token differently at the start of a string (leading spaces).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str] | None):
        self.decode = decode
        self.reset()

    def reset(self) -> None:
        self.ids: list[int] = []
        self.prefix = 0  # start of the context window
        self.read = 0  # tokens before this are already emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        if self.decode is None:
            return ""
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""
