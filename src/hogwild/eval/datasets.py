"""Evaluation tasks: ``{id, question, answer}`` from a file, reasoning-gym or the hub.

:func:`load_tasks` takes one string and decides where the tasks come from:

1. an existing ``.json`` / ``.jsonl`` file (field names configurable, common ones guessed);
2. a known hub dataset (``gsm8k``, ``limo``, ``math-500``, ``aime``, or their full ids such as
   ``GAIR/LIMO``), read through the optional ``datasets`` package when a network is there;
3. a reasoning-gym generator name (``gsm_symbolic``, ``basic_arithmetic``, ...), generated
   offline from ``seed``;
4. anything else with a ``/`` is tried as a hub id; a missing file or an unknown name is an
   error that says what would work.

Network access is probed with one short TCP connect before ``datasets`` is touched, so a
machine without a network gets a clear error in seconds instead of a hang on retries.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HogwildError
from ..net import reachable


class DatasetError(HogwildError):
    """A dataset that cannot be found, read or reached."""


@dataclass(frozen=True)
class Task:
    """One evaluation item. ``answer`` is a list of k answers for a bundle of k questions."""

    id: str
    question: str
    answer: str | list[str]
    parts: tuple[str, ...] = field(default=())  # the original questions of a bundle

    @property
    def k(self) -> int:
        return len(self.answer) if isinstance(self.answer, list) else 1


QUESTION_FIELDS = ("question", "problem", "prompt", "input", "query", "Question", "Problem")
ANSWER_FIELDS = ("answer", "final_answer", "expected_answer", "target", "output", "Answer",
                 "solution", "Solution")
ID_FIELDS = ("id", "unique_id", "uid", "ID", "Id", "problem_id", "idx")


@dataclass(frozen=True)
class HubSpec:
    path: str
    config: str | None
    split: str
    question: str
    answer: str


HUB_DATASETS: dict[str, HubSpec] = {
    "gsm8k": HubSpec("openai/gsm8k", "main", "test", "question", "answer"),
    "limo": HubSpec("GAIR/LIMO", None, "train", "question", "answer"),
    "math-500": HubSpec("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "aime": HubSpec("AI-MO/aimo-validation-aime", None, "train", "problem", "answer"),
}
HUB_ALIASES = {
    "openai/gsm8k": "gsm8k", "gsm8k": "gsm8k",
    "gair/limo": "limo", "limo": "limo",
    "huggingfaceh4/math-500": "math-500", "math-500": "math-500", "math500": "math-500",
    "ai-mo/aimo-validation-aime": "aime", "aime": "aime",
}
HUB_HOST = ("huggingface.co", 443)
NETWORK_TIMEOUT_S = 3.0


def load_tasks(
    source: str,
    limit: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Task]:
    """Tasks from a file path, a hub dataset name or a reasoning-gym generator name."""
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be at least 1 (got {limit})")
    fields = dict(question_field=question_field, answer_field=answer_field, id_field=id_field)
    path = Path(source).expanduser()
    if path.is_file():
        return load_file(path, limit=limit, **fields)
    key = source.lower()
    if key in HUB_ALIASES:
        return load_hub(HUB_DATASETS[HUB_ALIASES[key]], limit=limit, **fields)
    if _is_reasoning_gym(source):
        return load_reasoning_gym(source, limit=limit or 50, seed=seed)
    if path.suffix.lower() in (".json", ".jsonl") or path.exists() or source.startswith((".", "~")):
        raise DatasetError(
            f"dataset file {source!r} not found (or not a file). Give a JSON/JSONL file, a "
            f"reasoning-gym generator name such as gsm_symbolic, or one of: {', '.join(HUB_DATASETS)}")
    if "/" in source:
        spec = HubSpec(source, None, "test", question_field or "", answer_field or "")
        return load_hub(spec, limit=limit, **fields)
    raise DatasetError(
        f"unknown dataset {source!r}: not a file, not a reasoning-gym generator and not a known "
        f"hub dataset ({', '.join(HUB_DATASETS)}). Some reasoning-gym generators: "
        f"{', '.join(_rg_names()[:12])}, ...")


# --------------------------------------------------------------------------- files

def load_file(
    path: str | Path,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Task]:
    """Tasks from a JSON list (or ``{"data": [...]}``) or a JSONL file of objects."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} not found")
    text = path.read_text(encoding="utf-8")
    rows: list[Any]
    stripped = text.lstrip()
    if path.suffix.lower() == ".jsonl" or not stripped.startswith(("[", "{")):
        rows = _jsonl_rows(text, path)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            rows = _jsonl_rows(text, path)  # a .json file that is really JSON lines
        else:
            rows = _rows_of(data, path)
    if not rows:
        raise DatasetError(f"{path}: no records found")
    tasks = []
    for i, row in enumerate(rows):
        if limit is not None and len(tasks) >= limit:
            break
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: record {i + 1} is not an object")
        tasks.append(_task_from_row(row, i, str(path), question_field, answer_field, id_field))
    return tasks


def _jsonl_rows(text: str, path: Path) -> list[Any]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
    return rows


def _rows_of(data: Any, path: Path) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("data", "examples", "tasks", "problems", "items", "rows"):
            if isinstance(data.get(key), list):
                return data[key]
        return [data]
    raise DatasetError(f"{path}: expected a list of objects")


def _pick(row: dict, wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> Any:
    if wanted:
        if wanted not in row:
            raise DatasetError(
                f"{where}: record has no field {wanted!r} for the {what}; its fields are "
                f"{', '.join(map(str, row))}")
        return row[wanted]
    for name in candidates:
        if name in row:
            return row[name]
    if what == "id":
        return None
    raise DatasetError(
        f"{where}: cannot tell which field holds the {what} (fields: {', '.join(map(str, row))}); "
        f"name it with --{what}-field")


def _task_from_row(row: dict, index: int, where: str, question_field: str | None,
                   answer_field: str | None, id_field: str | None) -> Task:
    question = _pick(row, question_field, QUESTION_FIELDS, "question", where)
    answer = _pick(row, answer_field, ANSWER_FIELDS, "answer", where)
    ident = _pick(row, id_field, ID_FIELDS, "id", where)
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: record {index + 1} has an empty question")
    return Task(id=str(ident) if ident is not None else str(index), question=question.strip(),
                answer=clean_answer(answer))


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def clean_answer(answer: Any) -> str:
    """A gold answer as a short string: GSM8K's "... #### 42" becomes "42"."""
    if isinstance(answer, (int, float)):
        return str(answer)
    text = str(answer).strip()
    m = _GSM8K_FINAL.search(text)
    if m:
        return m.group(1).replace(",", "").strip()
    from ..answers import extract_boxed  # a worked solution with a boxed result

    boxed = extract_boxed(text) if "\\boxed" in text else None
    return boxed if boxed is not None else text


# --------------------------------------------------------------------------- reasoning-gym

def _rg_names() -> list[str]:
    try:
        from reasoning_gym.factory import DATASETS
    except Exception:  # noqa: BLE001 - optional at runtime
        return []
    return sorted(DATASETS)


def _is_reasoning_gym(name: str) -> bool:
    return name in _rg_names()


def load_reasoning_gym(name: str, limit: int = 50, seed: int = 0) -> list[Task]:
    """``limit`` tasks of the reasoning-gym generator ``name``, generated offline from ``seed``."""
    try:
        import reasoning_gym
    except ImportError:
        raise DatasetError("reasoning-gym is not installed: pip install reasoning-gym") from None
    if not _is_reasoning_gym(name):
        raise DatasetError(f"unknown reasoning-gym generator {name!r}")
    try:
        data = reasoning_gym.create_dataset(name, size=limit, seed=seed)
    except Exception as exc:  # noqa: BLE001 - generator configs raise various errors
        raise DatasetError(f"reasoning-gym generator {name!r} failed: {exc}") from None
    return [Task(id=f"{name}-{seed}-{i}", question=str(item["question"]).strip(),
                 answer=clean_answer(item["answer"])) for i, item in enumerate(data)]


# --------------------------------------------------------------------------- hub

def network_available(host: tuple[str, int] = HUB_HOST, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """One TCP connect to the hub, bounded by ``timeout`` (DNS failures count as no network)."""
    return reachable(host, timeout)


def _import_datasets() -> Any:
    try:
        import datasets  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return datasets


def load_hub(
    spec: HubSpec,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Task]:
    """Tasks from the Hugging Face hub through ``datasets``; a clear error when impossible."""
    datasets = _import_datasets()
    if datasets is None:
        raise DatasetError(
            f"{spec.path} is a hub dataset, and reading it needs the `datasets` package "
            "(pip install datasets) and a network. Offline, export it to a JSONL file and pass "
            "its path to --dataset.")
    online = network_available()
    if not online:
        os.environ["HF_DATASETS_OFFLINE"] = "1"  # only a local cache can help now
        os.environ["HF_HUB_OFFLINE"] = "1"
    split = spec.split if limit is None else f"{spec.split}[:{limit}]"
    try:
        data = datasets.load_dataset(spec.path, spec.config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds of errors
        why = "there is no network connection to huggingface.co and it is not cached" \
            if not online else f"{type(exc).__name__}: {str(exc)[:200]}"
        raise DatasetError(
            f"cannot load hub dataset {spec.path} ({why}). Export it to a JSONL file and pass "
            "its path to --dataset, or use a reasoning-gym generator such as gsm_symbolic.") from None
    where = f"hub dataset {spec.path}"
    q = question_field or spec.question or None
    a = answer_field or spec.answer or None
    return [_task_from_row(dict(row), i, where, q, a, id_field) for i, row in enumerate(data)]
