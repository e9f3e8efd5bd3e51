"""Teamwork analytics: how the workers of one run worked together, from its text alone.

Computed from a saved run (``hogwild solve --save``: :func:`from_saved`), a snapshot of a
run (:func:`from_snapshot`), or any list of steps (:func:`analyze`). Evaluation writes them
per unit into ``results.jsonl`` and ``hogwild report`` pools them per strategy
(:mod:`hogwild.eval.report`); ``hogwild show RUN --analytics`` prints them for one run.

A run's **steps** are, in step layouts (combined, interleaved), its finished steps in
completion order followed by the unfinished ones; the analysis is then *ordered*: "earlier"
means earlier in completion order. In layouts without steps (contiguous, independent, a
plain chain of thought) each worker's text is cut into paragraphs at blank lines; nothing
tells how the workers' paragraphs interleave in time, so "earlier" means earlier in the same
worker's text, and another worker's text counts as a whole. Every measure reads what the
model wrote (:func:`hogwild.protocol.loops.step_body`: without step headers, openings,
check-in questions or redirects).

Measures (word trigrams as in :mod:`hogwild.protocol.loops`):

- **redundancy**: the share of a step's distinct trigrams already written by another worker
  (ordered: in an earlier step; otherwise anywhere in its text), pooled over steps
  (``ngrams_repeated / ngrams``); per worker too. None with one worker.
- **cross-references**: steps that name another worker, or use a number that another worker
  wrote first and the problem does not contain (ordered runs only for numbers).
- **loops**: steps that repeat an earlier step (:mod:`hogwild.protocol.loops`; in unordered
  runs only the worker's own earlier paragraphs count); ``loop_rate = loops / steps``.
- **computing steps**: steps that contain a calculation (two numbers joined by an operator,
  or "=" followed by a number; :func:`~hogwild.analytics.measures.computes`);
  ``computing_rate = computing_steps / steps``. The other steps only talk about the work
  (plans, announcements, agreement): a team whose rate is far below a single chain of
  thought's talks more than it computes.
- **check-ins**: steps opened by the check-in question; the answer (yes, no, other), and
  after "yes" whether the worker **changed course**: the text that follows the answer (the
  rest of that step, or the worker's next step when the rest is shorter than three words)
  has less than half of its trigrams in what was written before the check-in.
- **copied**: whether the final answer is copied from the prompt
  (:class:`hogwild.answers.CopyGuard`).
- **first correct answer**: tokens each worker had written when the first correct answer
  appeared (needs the gold answer and token counts; with no gold the target is the run's
  final answer). Ordered: up to and including the first step whose box gives it (k answers
  for a bundle, all correct). Unordered: per worker, its tokens up to its own first correct
  answer; ``total`` is then the smallest of these (workers write in lock-step).
- **division of labour** (bundles of k > 1 questions): which worker first answered each
  question. A box with k answers answers all of them; a box with one answer answers the
  question the step last names ("Problem B", "problem 2", "#2") before it, else, given
  the gold answers, the one question whose gold it equals. ``split`` is true when two or
  more workers answered first.
- **assignments**: lines of the first worker's first two steps that give a worker a part
  ("Bob: problem B", "Bob takes the notebooks"; :func:`parse_assignments`); for bundles the
  questions each part names, and ``followed``: the share of assigned questions first
  answered by their assignee.
"""

from .adapters import steps_from_texts, ordered_steps, from_snapshot, from_saved, summary_rows
from .measures import CHANGE_THRESHOLD, Step, check_in_answer, parse_assignments, analyze

__all__ = ["CHANGE_THRESHOLD", "Step", "analyze", "check_in_answer", "from_saved", "from_snapshot", "ordered_steps", "parse_assignments", "steps_from_texts", "summary_rows"]
