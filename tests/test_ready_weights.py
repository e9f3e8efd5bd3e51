"""Ready weights (hogwild.models.ready): a bf16/fp16 load writes the fused weights once and
later loads map them, bit for bit the same model; stale, corrupt or unwritable files cost
speed, never the load."""

from __future__ import annotations

import logging

import pytest
import torch

from hogwild.models import loading, ready
from hogwild.models.loading import load_model
from hogwild.models.sequence import SequencePlan

from test_models import _tiny_hf


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOGWILD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _logits(loaded) -> torch.Tensor:
    ids = torch.arange(3, 40) % loaded.config.vocab_size
    return loaded.model(ids, SequencePlan(loaded.config))


def _state(loaded) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


def _forbid_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was read although a ready file exists")

    monkeypatch.setattr(loading, "_read_weights", refuse)


@pytest.mark.parametrize("kind,dtype", [("qwen2-tied", "bfloat16"), ("llama-bias", "bfloat16"), ("qwen3", "float16")])
def test_second_load_maps_the_same_model(kind, dtype, tmp_path, cache, monkeypatch):
    _tiny_hf(kind).save_pretrained(tmp_path / "m")
    first = load_model(str(tmp_path / "m"), dtype=dtype)
    files = list((cache / "ready").glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.endswith(f"-{ready.DTYPES[first.dtype].lower()}.safetensors")
    with monkeypatch.context() as m:
        _forbid_reading(m)
        second = load_model(str(tmp_path / "m"), dtype=dtype)
    a, b = _state(first), _state(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert torch.equal(_logits(first), _logits(second))
    if first.config.tie_embeddings:  # one tensor, as after a normal load
        assert second.model.lm_head.weight is second.model.model.embed_tokens.weight
    # mapped from the file, not copied: the weights share one storage
    storages = {p.untyped_storage().data_ptr() for p in second.model.parameters()}
    assert len(storages) == 1


def test_the_file_is_plain_safetensors(tmp_path, cache):
    """Our writer against the safetensors library as the reader."""
    from safetensors import safe_open

    _tiny_hf("llama").save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), dtype="bfloat16")
    (path,) = (cache / "ready").glob("*.safetensors")
    state = loaded.model.state_dict()
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(state)
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state[key])
        assert '"format"' in f.metadata()["hogwild"]


def test_changed_weights_rebuild_the_file(tmp_path, cache, monkeypatch):
    _tiny_hf("llama").save_pretrained(tmp_path / "m")
    load_model(str(tmp_path / "m"), dtype="bfloat16")
    hf = _tiny_hf("llama")
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight.mul_(-1)
    hf.save_pretrained(tmp_path / "m")  # new weights, new size/mtime
    again = load_model(str(tmp_path / "m"), dtype="bfloat16")
    monkeypatch.setenv("HOGWILD_CACHE", str(tmp_path / "other-cache"))  # a fresh, direct load
    fresh = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert torch.equal(_logits(again), _logits(fresh))


def test_corrupt_file_is_rebuilt(tmp_path, cache, monkeypatch, caplog):
    _tiny_hf("qwen2").save_pretrained(tmp_path / "m")
    first = load_model(str(tmp_path / "m"), dtype="bfloat16")
    (path,) = (cache / "ready").glob("*.safetensors")
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"\xff" * 8 + b[8:], lambda b: b"junk"):
        path.write_bytes(damage(path.read_bytes()) if path.exists() else b"junk")
        with caplog.at_level(logging.WARNING, logger="hogwild.models.ready"):
            again = load_model(str(tmp_path / "m"), dtype="bfloat16")
        assert torch.equal(_logits(first), _logits(again))
        with monkeypatch.context() as m:  # and the file is good again
            _forbid_reading(m)
            load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert "ignoring the unreadable ready weights" in caplog.text


def test_unwritable_cache_still_loads(tmp_path, cache, monkeypatch, caplog):
    _tiny_hf("llama").save_pretrained(tmp_path / "m")

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ready, "_write", fail)
    with caplog.at_level(logging.WARNING, logger="hogwild.models.ready"):
        loaded = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert "could not write ready weights" in caplog.text
    assert loaded.model.dtype == torch.bfloat16
    assert not list((cache / "ready").iterdir())  # no temporary file left behind


@pytest.mark.parametrize("kind", ["qwen2-tied", "llama-bias"])
def test_float32_maps_its_source_and_keeps_only_the_fused_parts(kind, tmp_path, cache, monkeypatch):
    """float32: the weights the fusion leaves alone map straight from the float32 checkpoint,
    the fused projections from a ready file holding only them; the model is the one a plain
    read gives, bit for bit. Only for checkpoints in hogwild's cache (replaced by renaming);
    a user's directory is read as before."""
    model_dir = cache / "converted" / "m"  # as a converted GGUF lives
    _tiny_hf(kind).save_pretrained(model_dir)
    with monkeypatch.context() as m:
        m.setattr(ready, "map_file", lambda path: (_ for _ in ()).throw(OSError("not mapped")))
        plain = load_model(str(model_dir), dtype="float32")  # the reading path
    first = load_model(str(model_dir), dtype="float32")  # maps, writes the fused parts
    (path,) = (cache / "ready").glob("*-f32.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        kept = set(f.keys())
    assert kept and all(("qkv_proj" in k) or ("gate_up_proj" in k) for k in kept)
    with monkeypatch.context() as m:
        _forbid_reading(m)
        second = load_model(str(model_dir), dtype="float32")
    for other in (first, second):
        a, b = _state(plain), _state(other)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(_logits(plain), _logits(other))
    # o_proj comes from the source file's mapping, qkv from the ready file's
    o = second.model.model.layers[0].self_attn.o_proj.weight.untyped_storage().data_ptr()
    qkv = second.model.model.layers[0].self_attn.qkv_proj.weight.untyped_storage().data_ptr()
    assert o != qkv
    if second.config.tie_embeddings:
        assert second.model.lm_head.weight is second.model.model.embed_tokens.weight
    _tiny_hf(kind).save_pretrained(tmp_path / "user")  # outside the cache: read, nothing written
    load_model(str(tmp_path / "user"), dtype="float32")
    assert not list((cache / "ready").glob("user-*"))


def test_ready_files_of_deleted_checkpoints_are_removed(tmp_path, cache):
    import shutil

    for name in ("a", "b"):
        _tiny_hf("llama").save_pretrained(tmp_path / name)
    load_model(str(tmp_path / "a"), dtype="bfloat16")
    assert len(list((cache / "ready").glob("a-*"))) == 1
    shutil.rmtree(tmp_path / "a")
    load_model(str(tmp_path / "b"), dtype="bfloat16")  # its write clears what a left
    assert not list((cache / "ready").glob("a-*")) and len(list((cache / "ready").glob("b-*"))) == 1


def test_a_killed_writer_leaves_nothing_that_lasts(tmp_path, cache):
    """A load killed while writing leaves its temporary file; the next write removes it
    (its process is gone) and never touches one whose writer still runs."""
    import subprocess
    import sys

    _tiny_hf("llama").save_pretrained(tmp_path / "m")
    path = ready.path_for(tmp_path / "m", torch.bfloat16)
    path.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = path.with_name(f".{path.name}.{dead}.tmp")
    orphan.write_bytes(b"half a file")
    alive = path.with_name(f".{path.name}.1.tmp")  # pid 1 is always running
    alive.write_bytes(b"being written")
    load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert path.is_file() and not orphan.exists() and alive.exists()


def test_a_nearly_full_disk_gets_no_ready_file(tmp_path, cache, monkeypatch, caplog):
    """The file is written only with room to spare behind it; the load goes on without it."""
    from collections import namedtuple

    _tiny_hf("llama").save_pretrained(tmp_path / "m")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ready.shutil, "disk_usage", lambda path: usage(1 << 40, (1 << 40) - (32 << 20), 32 << 20))
    with caplog.at_level(logging.INFO, logger="hogwild.models.ready"):
        loaded = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert "not writing ready weights" in caplog.text and not list((cache / "ready").glob("*.safetensors"))
    assert loaded.model.dtype == torch.bfloat16
