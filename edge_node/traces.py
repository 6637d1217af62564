"""The spans of one answer: `edge.recommendation` (following the request's traceparent) and its children, the
profile read, the rule mask, the model run (edge_node.batching) and the ranking rules. Made only when tracing is on
and the answer is sampled; their attributes are the answer's fields, never the shopper (no id, no pseudonym, no
address)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from edgerec.core.tracing import Tracing

TRACEPARENT = b"traceparent"
_UNSAMPLED_LAST_DIGIT = frozenset("02468aceACE")  # the flags' low bit (sampled) is the last hex digit's
# The answer's fields a span carries, under these names; a field that is None (no fallback, no experiment) or that
# the answer does not have is left out.
ANSWER_ATTRIBUTES = (
    ("region", "edgerec.region"),
    ("model_version", "edgerec.model_version"),
    ("data_version", "edgerec.data_version"),
    ("profile", "edgerec.profile"),
    ("fallback", "edgerec.fallback"),
    ("experiment", "edgerec.experiment"),
    ("variant", "edgerec.variant"),
)


class AnswerTrace:
    """The recording span of one answer, and the context its children are started in."""

    __slots__ = ("tracing", "span", "context")

    def __init__(self, tracing: Tracing, span: Any) -> None:
        self.tracing = tracing
        self.span = span
        self.context = tracing.context_of(span)

    @classmethod
    def begin(cls, tracing: Tracing, headers: list[tuple[bytes, bytes]], method: str, route: str) -> AnswerTrace | None:
        """The answer's span, a child of the request's traceparent if it has one; None when it is not sampled (a
        new trace left out of the sample, or a traceparent whose sampled flag is clear: nothing is made for them)."""
        traceparent = next((v.decode("latin-1") for k, v in headers if k == TRACEPARENT), None)
        if traceparent is not None and traceparent[-1:] in _UNSAMPLED_LAST_DIGIT:
            return None
        span = tracing.start(
            "edge.recommendation",
            tracing.extract(traceparent),
            {"http.request.method": method, "http.route": route},
            server=True,
        )
        return cls(tracing, span) if span.is_recording() else None

    def step(self, name: str, started_ns: int, attributes: Mapping[str, Any] | None = None) -> int:
        """A child span from `started_ns` to now; returns now (the next step's start)."""
        now = time.time_ns()
        self.tracing.start(name, self.context, attributes, start_time=started_ns).end(end_time=now)
        return now

    def answered(self, fields: Mapping[str, Any], offers: int, batch_size: int | None, cache: str | None) -> None:
        span = self.span
        for field, attribute in ANSWER_ATTRIBUTES:
            value = fields.get(field)
            if value is not None:
                span.set_attribute(attribute, value)
        span.set_attribute("edgerec.offers", offers)
        if batch_size:
            span.set_attribute("edgerec.batch_size", batch_size)
        if cache is not None:
            span.set_attribute("edgerec.anonymous_cache", cache)

    def end(self, status: int, error: str | None) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("edgerec.error", error)  # the refusal's stable code (never the caller's input)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def model_spans(tracing: Tracing, contexts: list[Any], started_ns: int, attributes: Mapping[str, Any]) -> None:
    """One `edge.model` span in each traced request's answer, all covering the one batched run they shared."""
    now = time.time_ns()
    for context in contexts:
        tracing.start("edge.model", context, attributes, start_time=started_ns).end(end_time=now)
