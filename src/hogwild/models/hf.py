"""Small helpers around transformers calls: keep its output quiet, summarize its errors.

The loader reports progress and failures itself (one line, or a :class:`HogwildError`), so
transformers' warnings, progress bars and multi-line tracebacks are kept out of the way.
"""

from __future__ import annotations

import warnings


def brief(error: BaseException) -> str:
    """The error's type and first line, short enough for a one-line message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


class quiet:
    """Silence transformers' progress bars and warnings inside a block."""

    def __enter__(self):
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        try:
            from transformers.utils import logging as hf_logging

            self._level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            self._bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:
            self._level = None
        return self

    def __exit__(self, *exc):
        if self._level is not None:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(self._level)
            if self._bars:
                hf_logging.enable_progress_bar()
        self._warnings.__exit__(*exc)
        return False


class no_tqdm:
    """The GGUF reader draws its own tqdm bar; the caller reports the conversion instead."""

    def __enter__(self):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        self._module, self._saved = gguf_utils, getattr(gguf_utils, "tqdm", None)
        if self._saved is not None:
            gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._module.tqdm = self._saved
        return False
