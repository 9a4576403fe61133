"""Result predicates: answers that mean failure (failsafe-go's ``HandleResult``, resilience4j's ``retryOnResult``).

Many APIs answer "not yet" or "failed" with a successful call: a ``status: PENDING`` field, an empty page while an
index builds. A policy's result predicate (``handle_result=``; a HedgePolicy's ``non_fatal_result=``) sees the
answer of each attempt, as the transport reads it (:meth:`Semantics.response_of`: gRPC gives a unary call's response
message, a response stream's first message at commit, None when the stream ended with none), and says whether the
policy treats it as a failure. The policy then acts as on a failure it handles, with a :class:`ResultFailure` in its
events; what the caller finally gets is the answer itself, unless a fallback replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeAlias

from . import _options as options
from ._execution import Execution, settle

__all__ = ["ResultFailure", "ResultPredicate"]

_log = logging.getLogger("interceptors")

ResultPredicate: TypeAlias = Callable[[Any], bool]
"""Tells whether an answer is a failure (True) or a success (False)."""


class ResultFailure(Exception):
    """An attempt answered, and a policy's result predicate judged ``result`` (the answer, as the predicate saw it)
    a failure: what retries, breakers, hedges and fallbacks report for it in their events."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    def __str__(self) -> str:
        return f"the answer was judged a failure: {options.shown(self.result)}"


class Judge:
    """One policy's result predicate, applied to an attempt's answer. A predicate that raises leaves the answer
    judged by its status, as with no predicate; that is logged once per policy."""

    __slots__ = ("_logged", "_policy", "predicate")

    def __init__(self, predicate: ResultPredicate, policy: str) -> None:
        self.predicate, self._policy, self._logged = predicate, policy, False

    def __call__(self, execution: Execution, result: Any) -> ResultFailure | None:
        """A :class:`ResultFailure` when the attempt's ``result`` is an answer the predicate calls a failure, else
        None (a fallback's answer is never judged: it is no attempt's)."""
        if execution.fallback is not None:
            return None
        try:
            answer = execution.semantics.response_of(result, execution)
            failed = bool(self.predicate(answer))
        except Exception:
            if not self._logged:
                self._logged = True
                _log.exception("%s's result predicate raised: answers are judged by their status alone", self._policy)
            return None
        return ResultFailure(answer) if failed else None

    def __repr__(self) -> str:
        return repr(self.predicate)


def judge(value: object, option: str, policy: str) -> Judge | None:
    """``value`` (a predicate of the answer, or None) checked, as the policy ``policy`` applies it."""
    if value is None:
        return None
    return Judge(options.function(value, option, "answer"), policy)


def passed_over(execution: Execution) -> None:
    """An attempt whose answer a policy judged a failure and does not hand on (a retry replaces it, a fallback answers
    instead, another hedge wins): a stream that committed is cancelled, and the policies inside that wait for its end
    learn now that it answered (they judged its answer by their own rules when it came)."""
    callbacks = execution.settle
    if callbacks is None:  # a unary call: nothing is left running
        return
    cancel = execution.on_cancel
    if cancel is not None:
        cancel()
    if callbacks:
        waiting = list(callbacks)
        callbacks.clear()
        settle(waiting, None)
