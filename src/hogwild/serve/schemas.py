"""Request bodies: validated with pydantic (strict types), then turned into a :class:`Job`.

Every problem found here is an :class:`~.errors.APIError` (400, or 404 for an unknown model)
naming the field (``param``) in OpenAI's style. Unknown top-level fields are ignored (clients
send many optional OpenAI fields); unknown fields inside the ``hogwild`` extension are
refused, so a misspelt setting never passes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..core.layouts import LAYOUTS
from ..solve import SolveSettings
from .config import ServeConfig
from .errors import APIError, invalid

MAX_STOP_STRINGS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class HogwildOptions(_Strict):
    """The ``hogwild`` extension object (``extra_body={"hogwild": {...}}`` in the client)."""

    workers: int | None = None
    layout: str | None = None
    check_in_every: int | None = None
    few_shot: bool | None = None
    stop: Literal["first", "agree", "none"] | None = None
    agree_k: int | None = None
    redirect_loops: bool | None = None
    no_repeat_ngram: int | None = None
    forced_answer: bool | None = None
    names: list[str] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # "name" and friends are ignored
    role: str
    content: str | list[TextPart] | None = None


class _Common(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: bool | int | None = None
    hogwild: HogwildOptions | None = None


class ChatRequest(_Common):
    messages: list[Message]
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool | None = None


@dataclass
class Job:
    """A validated request: what to solve, how, and how to answer."""

    kind: Literal["chat", "completion"]
    problem: str
    settings: SolveSettings
    model: str
    stream: bool = False
    include_usage: bool = False
    stop_strings: list[str] = field(default_factory=list)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise APIError(400, f"The body is not valid JSON: {error}", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The body must be a JSON object.", "invalid_json")
    return body


def _validation_error(error: ValidationError) -> APIError:
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        known = ", ".join(HogwildOptions.model_fields)
        return invalid(f"Unknown field {param!r}; the hogwild extension knows: {known}.", param,
                       "unknown_field")
    if first["type"] == "missing":
        return invalid(f"Missing required field {param!r}.", param, "missing_field")
    return invalid(f"Invalid value for {param!r}: {first['msg']}.", param, "invalid_type")


def chat_job(body: dict[str, Any], config: ServeConfig) -> Job:
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as error:
        raise _validation_error(error) from None
    if request.tools:
        raise invalid("Tools are not supported by this server.", "tools", "unsupported")
    budget = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    return _job("chat", problem_from_messages(request.messages), request, budget, param, config)


def completion_job(body: dict[str, Any], config: ServeConfig) -> Job:
    try:
        request = CompletionRequest.model_validate(body)
    except ValidationError as error:
        raise _validation_error(error) from None
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise invalid("Give one prompt (a string, or a list of one string).", "prompt")
        prompt = prompt[0]
    if not prompt.strip():
        raise invalid("The prompt is empty.", "prompt", "empty_prompt")
    if request.echo:
        raise invalid("echo is not supported by this server.", "echo", "unsupported")
    return _job("completion", prompt, request, request.max_tokens, "max_tokens", config)


def problem_from_messages(messages: list[Message]) -> str:
    """The problem the workers solve: the last user message, after the system and developer
    messages (as instructions) and the earlier turns (as a transcript). The protocol then
    renders it through the model's chat template, like ``hogwild solve``."""
    if not messages:
        raise invalid("messages must contain at least one message.", "messages", "empty_messages")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.role
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"messages[{i}].role: {role!r} is not supported; use system, developer, "
                          "user or assistant.", f"messages.{i}.role")
        text = _content_text(message, i)
        if role in ("system", "developer"):
            if text.strip():
                system.append(text.strip())
        else:
            turns.append((role, text))
    if not turns or turns[-1][0] != "user":
        raise invalid("The last message (after any system messages) must be the user's.", "messages")
    question = turns[-1][1].strip()
    if not question:
        raise invalid("The last user message is empty.", "messages", "empty_messages")
    parts = list(system)
    earlier = [(role, text.strip()) for role, text in turns[:-1] if text.strip()]
    if earlier:
        parts.append("Conversation so far:\n" + "\n".join(f"{role.capitalize()}: {text}" for role, text in earlier))
    parts.append(question)
    return "\n\n".join(parts)


def _content_text(message: Message, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise invalid(f"messages[{index}].content[{j}]: only text parts are supported.",
                          f"messages.{index}.content.{j}", "unsupported")
        texts.append(part.text)
    return "".join(texts)


def _job(kind: Literal["chat", "completion"], problem: str, request: _Common, budget: int | None,
         budget_param: str, config: ServeConfig) -> Job:
    if request.model is not None and request.model != config.model:
        raise APIError(404, f"The model {request.model!r} does not exist; this server serves "
                            f"{config.model!r}.", "model_not_found", "model")
    if request.logprobs:
        raise invalid("logprobs are not supported by this server.", "logprobs", "unsupported")
    if budget is None:
        budget = config.budget_default
    if not 1 <= budget <= config.max_tokens_cap:
        raise invalid(f"{budget_param} is the budget in forward passes and must be between 1 and "
                      f"{config.max_tokens_cap} (got {budget}).", budget_param)
    options = request.hogwild or HogwildOptions()
    workers, param = config.workers, "n"
    if options.workers is not None:
        workers, param = options.workers, "hogwild.workers"
    elif request.n is not None:
        workers = request.n
    if not 1 <= workers <= config.max_workers:
        raise invalid(f"{param} is the number of workers and must be between 1 and "
                      f"{config.max_workers} (got {workers}).", param)
    temperature = 0.0 if request.temperature is None else request.temperature
    if not 0.0 <= temperature <= 2.0:
        raise invalid(f"temperature must be between 0 and 2 (got {temperature}).", "temperature")
    top_p = 1.0 if request.top_p is None else request.top_p
    if not 0.0 < top_p <= 1.0:
        raise invalid(f"top_p must be in (0, 1] (got {top_p}).", "top_p")
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
        raise invalid(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings.", "stop")
    settings = SolveSettings(workers=workers, max_passes=budget, temperature=temperature, top_p=top_p,
                             seed=request.seed)
    if options.layout is not None:
        if options.layout not in LAYOUTS:
            raise invalid(f"Unknown layout {options.layout!r}; use one of {', '.join(LAYOUTS)}.",
                          "hogwild.layout")
        settings.layout = options.layout
    if options.check_in_every is not None:
        if options.check_in_every < 0:
            raise invalid("hogwild.check_in_every must be 0 (off) or more.", "hogwild.check_in_every")
        settings.check_in_every = options.check_in_every
    if options.agree_k is not None:
        if not 1 <= options.agree_k <= workers:
            raise invalid(f"hogwild.agree_k must be between 1 and the number of workers ({workers}).",
                          "hogwild.agree_k")
        settings.agree_k = options.agree_k
    if options.names is not None:
        names = [n.strip() for n in options.names]
        if len(names) != workers or any(not n for n in names) or len(set(names)) != len(names):
            raise invalid(f"hogwild.names must give {workers} different, non-empty names.", "hogwild.names")
        settings.names = names
    if options.no_repeat_ngram is not None:
        if options.no_repeat_ngram < 0 or options.no_repeat_ngram == 1:
            raise invalid("hogwild.no_repeat_ngram must be 0 (off) or at least 2.", "hogwild.no_repeat_ngram")
        settings.no_repeat_ngram = options.no_repeat_ngram
    for name in ("few_shot", "stop", "redirect_loops", "forced_answer"):
        value = getattr(options, name)
        if value is not None:
            setattr(settings, name, value)
    stream = bool(request.stream)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    if request.stream_options is not None and not stream:
        raise invalid("stream_options is only allowed with stream: true.", "stream_options")
    return Job(kind, problem, settings, config.model, stream, include_usage, stops)
