"""Evaluation strategies: one run per task gives an answer at every budget.

All strategies share :meth:`Strategy.run` ``(loaded, task, budgets) -> StrategyRun``: the
driver (:class:`hogwild.driver.Driver`) runs once up to the largest budget with snapshots at
every budget; each snapshot is turned into an answer. When a stop rule ends the run early,
budgets past the stop reuse the final state (its answer, and its forced answer if one is
needed). Forced answers are decoded by the driver after the budget from the transcript; they
do not count towards passes.

- ``single``: one worker, plain chain of thought (a plain prompt, no worker names or step
  headers: :class:`hogwild.protocol.PlainProtocol`); the answer it has boxed so far, else none.
- ``early-stop``: the same run; at a budget without an answer, the forced answer.
- ``independent``: N workers on the plain prompt in the ``independent`` layout (no
  cross-visibility, same batched passes); each worker's own answer, else its own forced
  answer; combined by :func:`hogwild.answers.voting.majority_vote`. Greedy decoding would make N copies of one
  answer, so this strategy samples (``temperature``, default 0.7 when the run is greedy).
- ``hogwild-<layout>`` for every collaborative layout in the registry
  (:func:`hogwild.core.layouts.collaborative_layouts`: combined, interleaved, contiguous, and
  any registered one): N collaborating workers with the protocol; the last answer in
  completion order, else the forced answer. For a bundle, when no step gives all k
  answers, single answers labelled with their question ("Problem B: ... \\boxed{7}") are
  put in question order (:func:`hogwild.answers.lists.answers_by_question`), else the last
  k boxes in completion order are read.
- ``hogwild-orchestrated`` (orchestrator-workers, combined layout): the first worker writes
  an assignment, one line per worker, and the others follow it (the protocol's
  ``orchestrated`` pattern); answers as ``hogwild-combined``. The analytics record the
  assignments parsed from the text.
- ``hogwild-verified`` (evaluator-optimizer, combined layout): the last worker checks the
  others' results and alone writes the final answer (the ``verified`` pattern). The answer
  is the checker's last boxed answer (its confirmation or its correction); the run stops
  when the checker has answered; a solver's box alone does neither. Without one, the forced
  answer, whose text says the checker gives it.

Stop rules: single/early-stop/hogwild stop at the first complete answer (for a bundle of
k questions, a box with k answers); independent stops when every worker has answered;
hogwild-verified when the checker has. An answer copied from the prompt
(:class:`hogwild.answers.CopyGuard`: a number of the examples or instructions that the
problem does not contain) is not an answer for a stop rule, so it never ends a run; the
hogwild strategies read the last answer that is not copied, and a copied one only when
there is no other.

Every strategy run also yields its teamwork analytics (:mod:`hogwild.analytics`), read from
the final state of the run, and per budget whether the answer is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import analytics as teamwork
from ..answers import CopyGuard
from ..answers.lists import answers_by_question
from ..answers.voting import bundle_vote
from ..core.events import RunStats, Snapshot
from ..core.layouts import collaborative_layouts, get_layout
from ..core.sampling import Sampling
from ..core.script import Script
from ..driver import Driver, Handle, Outcome, Scheduler
from ..protocol import DEFAULT_FEW_SHOT, DEFAULT_NO_REPEAT_NGRAM, PlainProtocol, Protocol
from .bundles import answer_from_text, is_complete, split_answers
from .datasets import Task

INDEPENDENT_TEMPERATURE = 0.7


@dataclass
class BudgetResult:
    """The answer of one strategy run at one budget (``passes`` <= budget actually used)."""

    budget: int
    answer: str | None
    forced: bool
    passes: int
    tokens: list[int]
    wall_s: float
    votes: list[str | None] | None = None  # independent: each worker's answer
    copied: bool = False  # the answer is copied from the prompt (CopyGuard)


@dataclass
class StrategyRun:
    results: list[BudgetResult]
    passes: int
    stop_reason: str
    timings: dict[str, float] = field(default_factory=dict)
    analytics: dict | None = None  # teamwork analytics of the final state (hogwild.analytics)


def problem_texts(task: Task) -> str | tuple[str, ...]:
    """What counts as the problem for the copy guard: a bundle's questions, else the question."""
    return task.parts if task.parts else task.question


def copy_guard(prompt_text: str, task: Task) -> CopyGuard:
    return CopyGuard(prompt_text, problem_texts(task))


def is_copied(guard: CopyGuard, answer: str | None, k: int) -> bool:
    return guard.copied(answer, split_answers(answer) if k > 1 and answer is not None else None)


class AnswerStop:
    """A strategy's stop rule: a worker has answered once its text gives all k answers, and
    the answer is not copied from the prompt (``guard``)."""

    def __init__(self, strategy: Strategy, task: Task, guard: CopyGuard | None = None):
        self.strategy, self.task, self.guard = strategy, task, guard
        self.answered: dict[int, str] = {}

    def observe(self, worker: int, text: str) -> None:
        if worker not in self.answered:
            found = answer_from_text(text, self.task.k)
            if is_complete(found, self.task.k):
                if self.guard is None or not is_copied(self.guard, found, self.task.k):
                    self.answered[worker] = found

    def done(self, stats: RunStats) -> bool:
        return self.strategy.should_stop(stats, self.answered)


class Strategy:
    """Base class: subclasses choose the protocol, layout, stop rule and answer rule."""

    name = "strategy"
    layout = "independent"
    multi_worker = False

    def __init__(self, workers: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, forced_tokens: int = 32, check_in_every: int = 1024,
                 few_shot: bool | None = DEFAULT_FEW_SHOT, redirect_loops: bool = True,
                 no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM):
        self.workers = workers if self.multi_worker else 1
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.forced_tokens = forced_tokens
        self.check_in_every, self.few_shot = check_in_every, few_shot
        self.redirect_loops, self.no_repeat_ngram = redirect_loops, no_repeat_ngram
        self.protocol: Protocol | PlainProtocol = PlainProtocol(self.workers)

    def names(self, task: Task) -> list[str]:
        """The workers' names on ``task`` (the protocol's, which avoid the names the task
        mentions; plain workers are "Worker 1", ...)."""
        names = getattr(self.protocol.for_problem(task.question), "worker_names", None)
        return list(names) if names else [f"Worker {i + 1}" for i in range(self.workers)]

    # -- hooks ---------------------------------------------------------------------------
    def script(self, loaded, task: Task) -> Script:
        protocol = self.protocol.for_problem(task.question)
        return protocol.script(task.question, loaded.tokenizer, loaded.context_length)

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.seed)

    def should_stop(self, stats: RunStats, answered: dict[int, str]) -> bool:
        return bool(answered)

    def forced_requests(self, task: Task, snap: Snapshot) -> list[int | None]:
        """The forced answers a budget reached in state ``snap`` needs (None: the team's)."""
        return []

    def answer_at(self, task: Task, snap: Snapshot, outcome: Outcome) -> tuple[str | None, bool, list | None]:
        """(answer, forced?, per-worker votes) at one budget."""
        raise NotImplementedError

    # -- the shared driver ---------------------------------------------------------------
    def decode_key(self) -> tuple | None:
        """Strategies with equal keys make identical engine runs (the runner reuses one)."""
        return None

    def driver(self, loaded, scheduler: Scheduler | None = None) -> Driver:
        return Driver(loaded, self.layout, self.sampling(), self.forced_tokens, scheduler)

    def submit(self, loaded, task: Task, budgets: Sequence[int], scheduler: Scheduler | None = None) -> Handle:
        """Start the engine run of this strategy on ``task`` (snapshots and forced answers at
        every budget); the handle's result is what :meth:`answers` reads."""
        budgets = sorted({int(b) for b in budgets})
        if not budgets or budgets[0] < 1:
            raise ValueError(f"budgets must be positive integers (got {budgets})")
        driver = self.driver(loaded, scheduler)
        script = self.script(loaded, task)
        guard = copy_guard(driver.decode(script.prompt_ids), task)
        return driver.submit(script, budgets[-1], AnswerStop(self, task, guard), budgets, budgets,
                             lambda snap: self.forced_requests(task, snap))

    def decode(self, loaded, task: Task, budgets: Sequence[int]) -> Outcome:
        """Run the engine once up to the largest budget, with snapshots at every budget."""
        return self.submit(loaded, task, budgets).result()

    def answers(self, loaded, task: Task, decoded: Outcome) -> StrategyRun:
        """Answers at every budget from a decoded run (its forced answers included)."""
        results, memo = [], {}
        guard = copy_guard(decoded.prompt_text, task)
        for b in decoded.requested:
            snap, wall = decoded.at(b)
            if id(snap) not in memo:
                memo[id(snap)] = self.answer_at(task, snap, decoded)
            answer, forced, votes = memo[id(snap)]
            results.append(BudgetResult(b, answer, forced, snap.passes, list(snap.generated_tokens),
                                        round(wall, 3), votes, is_copied(guard, answer, task.k)))
        timings = {k: round(v, 3) for k, v in decoded.timings.items()}
        timings["total_s"] = round(sum(timings.values()), 3)
        return StrategyRun(results, decoded.passes, decoded.stop_reason, timings,
                           self.analytics(loaded, task, decoded, results[-1].answer if results else None))

    def analytics(self, loaded, task: Task, decoded: Outcome, answer: str | None) -> dict:
        """Teamwork analytics of the run's final state (:mod:`hogwild.analytics`)."""
        tok = loaded.tokenizer

        def count(text: str) -> int:
            return len(tok.encode(text, add_special_tokens=False))

        return teamwork.from_snapshot(
            decoded.final, self.names(task), problem_texts(task), steps=get_layout(self.layout).steps,
            answer=answer, gold=task.answer, k=task.k, guard=copy_guard(decoded.prompt_text, task),
            count_tokens=count)

    def run(self, loaded, task: Task, budgets: Sequence[int], seed: int | None = None) -> StrategyRun:
        """Decode once and read the answers at every budget."""
        if seed is not None:
            self.seed = seed
        return self.answers(loaded, task, self.decode(loaded, task, budgets))


def _forced_answer(outcome: Outcome, snap: Snapshot, worker: int | None) -> str | None:
    found = outcome.forced_at(snap, worker)
    return found.answer if found is not None else None


class Single(Strategy):
    name = "single"

    def decode_key(self):
        # single and early-stop make the same run (plain prompt, one worker, stop at answer)
        return ("plain-1", self.temperature, self.top_p, self.seed)

    def forced_requests(self, task, snap):
        # the run is shared with early-stop (same decode key), which needs these
        return [] if is_complete(answer_from_text(snap.workers[0], task.k), task.k) else [0]

    def answer_at(self, task, snap, outcome):
        return answer_from_text(snap.workers[0], task.k), False, None


class EarlyStop(Single):
    name = "early-stop"

    def answer_at(self, task, snap, outcome):
        found = answer_from_text(snap.workers[0], task.k)
        if is_complete(found, task.k):
            return found, False, None
        return _forced_answer(outcome, snap, 0), True, None


class Independent(Strategy):
    name = "independent"
    multi_worker = True

    def sampling(self) -> Sampling:
        temperature = self.temperature if self.temperature > 0 else INDEPENDENT_TEMPERATURE
        return Sampling(temperature, self.top_p, self.seed)

    def should_stop(self, stats, answered):
        return all(w.index in answered or w.done for w in stats.workers)

    def forced_requests(self, task, snap):
        return [w for w, text in enumerate(snap.workers)
                if not is_complete(answer_from_text(text, task.k), task.k)]

    def answer_at(self, task, snap, outcome):
        votes, forced = [], False
        for w, text in enumerate(snap.workers):
            found = answer_from_text(text, task.k)
            if not is_complete(found, task.k):
                found = _forced_answer(outcome, snap, w)
                forced = True
            votes.append(found)
        return bundle_vote(votes, task.k), forced, votes


class Hogwild(Strategy):
    """N collaborating workers in one of the engine's layouts, with the protocol's prompt."""

    multi_worker = True
    pattern = "team"

    def __init__(self, layout: str, **kwargs):
        super().__init__(**kwargs)
        self.layout = layout
        self.name = f"hogwild-{layout}"
        self.protocol = Protocol(num_workers=self.workers, layout=layout, pattern=self.pattern,
                                 check_in_every=self.check_in_every, few_shot=self.few_shot,
                                 redirect_loops=self.redirect_loops, no_repeat_ngram=self.no_repeat_ngram)

    def answerers(self) -> set[int] | None:
        """The workers whose boxes are the team's answer (None: everyone's)."""
        return None

    def given(self, task: Task, snap: Snapshot, guard: CopyGuard | None = None) -> str | None:
        """The team's complete answer in ``snap``: the last one in completion order (of the
        :meth:`answerers`); with a ``guard``, the last one that is not copied, if any."""
        if snap.history:
            steps = list(snap.history) + list(snap.current)
        else:  # layouts without steps: each worker's whole text, in worker order
            steps = list(enumerate(snap.workers))
        allowed = self.answerers()
        texts = [t for w, t in steps if allowed is None or w in allowed]
        candidates = [answer_from_text(text, task.k) for text in reversed(texts)]
        if task.k > 1:  # answers spread over several steps or workers: by question, else in order
            candidates.append(answers_by_question(texts, task.k))
            candidates.append(answer_from_text("\n\n".join(texts), task.k))
        complete = [c for c in candidates if is_complete(c, task.k)]
        if guard is not None:
            complete = [c for c in complete if not is_copied(guard, c, task.k)] or complete
        return complete[0] if complete else None

    def forced_requests(self, task, snap):
        return [None] if self.given(task, snap) is None else []

    def answer_at(self, task, snap, outcome):
        found = self.given(task, snap, copy_guard(outcome.prompt_text, task))
        if found is not None:
            return found, False, None
        return _forced_answer(outcome, snap, None), True, None


class Orchestrated(Hogwild):
    """Orchestrator-workers on the shared cache: the first worker writes an assignment, one
    line per worker ("Bob: problem B"), that the others follow (protocol pattern
    ``orchestrated``, combined layout). Answers as :class:`Hogwild`."""

    pattern = "orchestrated"

    def __init__(self, **kwargs):
        super().__init__("combined", **kwargs)
        self.name = "hogwild-orchestrated"


class Verified(Hogwild):
    """Evaluator-optimizer on the shared cache: the last worker checks the others' results
    and alone writes the final answer, confirming or correcting them (protocol pattern
    ``verified``, combined layout). Only the checker's answer counts and stops the run."""

    pattern = "verified"

    def __init__(self, **kwargs):
        super().__init__("combined", **kwargs)
        self.name = "hogwild-verified"

    @property
    def checker(self) -> int:
        return self.workers - 1

    def answerers(self) -> set[int]:
        return {self.checker}

    def should_stop(self, stats, answered):
        return self.checker in answered


#: Strategies with a collaboration pattern of their own (on the combined layout).
PATTERN_STRATEGIES = {"hogwild-orchestrated": Orchestrated, "hogwild-verified": Verified}


def strategy_names() -> list[str]:
    """Every strategy name: the baselines, ``hogwild-<layout>`` per collaborative layout, and
    the pattern strategies."""
    layouts = [f"hogwild-{l}" for l in collaborative_layouts()]
    return ["single", "early-stop", "independent"] + layouts + [
        n for n in PATTERN_STRATEGIES if n not in layouts]


def make_strategy(name: str, workers: int = 1, **kwargs) -> Strategy:
    """A strategy by name (see :func:`strategy_names`)."""
    if name == "single":
        return Single(workers=1, **kwargs)
    if name == "early-stop":
        return EarlyStop(workers=1, **kwargs)
    if name == "independent":
        return Independent(workers=workers, **kwargs)
    if name in PATTERN_STRATEGIES:
        return PATTERN_STRATEGIES[name](workers=workers, **kwargs)
    if name.startswith("hogwild-") and name[len("hogwild-"):] in collaborative_layouts():
        return Hogwild(name[len("hogwild-"):], workers=workers, **kwargs)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(strategy_names())}")
