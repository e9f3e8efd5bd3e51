"""Shared fixtures.

``default_model`` is the real default checkpoint (smollm2-135m) in fp32. Its first load in a
fresh cache converts the GGUF once (~15-35 s); later loads read the converted cache (<1 s).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model():
    from hogwild.loader import load_model

    return load_model("smollm2-135m", dtype="float32", device="cpu")
