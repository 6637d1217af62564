"""Traces with OpenTelemetry: off unless a sample ratio is set, W3C `traceparent` honoured on the way in and sent on
the way out, exported by OTLP (or to a JSON-lines file). Spans carry no shopper id, not even the pseudonym.

Off is the default and costs a request one attribute read (`tracing.enabled`): the SDK is not even imported.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping, Sequence

from pydantic import field_validator

from .settings import ConfigError, ServiceSettings, setting

TRACEPARENT = "traceparent"
EXPORTERS = ("otlp", "console", "file:PATH")


class TracingError(ValueError):
    """A tracing setting that cannot be used (the message names it)."""


def parse_sample_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise TracingError(f"EDGEREC_TRACE_SAMPLE: a ratio from 0 to 1, not {text!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise TracingError(f"EDGEREC_TRACE_SAMPLE: a ratio from 0 to 1, not {ratio}")
    return ratio


def check_exporter(spec: str) -> str:
    if spec in ("otlp", "console") or (spec.startswith("file:") and len(spec) > 5):
        return spec
    raise TracingError(f"EDGEREC_TRACE_EXPORTER: one of {', '.join(EXPORTERS)}, not {spec!r}")


def check_installed(exporter: str) -> None:
    """At a service's start, when tracing is on: the SDK (and the OTLP exporter, if chosen) can be imported."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401

        if exporter == "otlp":
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as exc:
        raise TracingError(
            f"EDGEREC_TRACE_SAMPLE is set but {exc.name} is not installed: pip install 'edgerec[traces]'"
        ) from None


class TraceSettings(ServiceSettings):
    """The two tracing settings every service takes (its own settings model adds them by inheriting these)."""

    trace_sample: float = setting(
        0.0,
        "EDGEREC_TRACE_SAMPLE",
        "share of new traces recorded, 0 to 1 (0: tracing off, nothing made); an incoming sampled traceparent is "
        "always followed",
    )
    trace_exporter: str = setting(
        "otlp", "EDGEREC_TRACE_EXPORTER", "where spans go: otlp (OTEL_EXPORTER_OTLP_ENDPOINT), console, file:PATH"
    )

    @field_validator("trace_sample", mode="before")
    @classmethod
    def _sample(cls, raw: object) -> float:
        return parse_sample_ratio(str(raw))

    @field_validator("trace_exporter")
    @classmethod
    def _exporter(cls, spec: str) -> str:
        return check_exporter(spec)

    def check_tracing_installed(self) -> None:
        """At a service's start: with tracing on, the packages it needs are installed (check_installed)."""
        if self.trace_sample > 0:
            try:
                check_installed(self.trace_exporter)
            except TracingError as exc:
                raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Tracing:
    """The process's tracer, or none. `span()` is a context manager yielding the span (None when off).

    Sampling is parent-based: a span with a parent is recorded when its parent was. Whether a new trace (a root) is
    recorded is decided here, by one random draw against `ratio`, before the SDK is called at all: a root that is
    not sampled costs that draw, not the SDK's ids, sampler and non-recording span (4.4 µs measured)."""

    enabled: bool = False
    service: str = ""
    ratio: float = 0.0
    _tracer: Any = None
    _provider: Any = None
    _propagator: Any = None
    _root: Any = None  # the empty context: a span started in it is a root
    _kinds: tuple[Any, Any, Any] = (None, None, None)  # SpanKind (INTERNAL, SERVER, CLIENT)
    _in_context: Any = None  # opentelemetry.trace.set_span_in_context
    _current_span: Any = None  # opentelemetry.trace.get_current_span
    _unsampled: Any = None  # opentelemetry.trace.INVALID_SPAN: what a root left out of the sample gets
    _draw: Any = random.random

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        headers: Mapping[str, str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        client: bool = False,
    ) -> Iterator[Any]:
        """A span, made current; a root of its own unless `headers` carry a traceparent (or a span is current).
        `client`: it covers a call to another service (which `inject` hands it on to)."""
        if not self.enabled:
            yield None
            return
        context = self._propagator.extract(headers) if headers is not None else None
        if not self._current_span(context).get_span_context().is_valid and self._draw() >= self.ratio:
            yield None  # a new trace, not in the sample
            return
        kind = self._kinds[2 if client else 0]
        with self._tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=dict(attributes or {})
        ) as span:
            yield span

    def start(
        self,
        name: str,
        parent: Any = None,
        attributes: Mapping[str, Any] | None = None,
        start_time: int | None = None,
        server: bool = False,
    ) -> Any:
        """A span that is not made current, for the caller to end (`span.end(end_time=...)`); None when off.
        `parent` is a context from `extract` or `context_of`; without one the span is a root of its own. A span left
        out of the sample is a non-recording one (`is_recording()` False): nothing of it is exported."""
        if not self.enabled:
            return None
        if parent is None:
            if self._draw() >= self.ratio:
                return self._unsampled
            parent = self._root
        return self._tracer.start_span(
            name,
            context=parent,
            kind=self._kinds[server],
            attributes=attributes,
            start_time=start_time,
        )

    def extract(self, traceparent: str | None) -> Any:
        """The context of an incoming `traceparent`, or None (a new root) when there is none or it is malformed."""
        if not traceparent:
            return None
        context = self._propagator.extract({TRACEPARENT: traceparent})
        return context if self._current_span(context).get_span_context().is_valid else None

    def context_of(self, span: Any) -> Any:
        """The context whose parent is `span`, for its children."""
        return self._in_context(span, self._root)

    @staticmethod
    def traceparent_of(span: Any) -> str:
        """`span` as a W3C traceparent value."""
        context = span.get_span_context()
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def in_each(
        self, traceparents: str, name: str, attributes: Mapping[str, Any], start_time: int, limit: int = 16
    ) -> None:
        """A span from `start_time` to now in each trace of `traceparents` (comma-separated, the first `limit`),
        a child of the span each names."""
        for traceparent in [t.strip() for t in traceparents.split(",") if t.strip()][:limit]:
            self.start(name, self.extract(traceparent), attributes, start_time=start_time).end()

    def inject(self, headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
        """Adds the current span's traceparent to outgoing headers (nothing when off or outside a span)."""
        if self.enabled:
            self._propagator.inject(headers)
        return headers

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


DISABLED = Tracing()


def configure(
    service: str, sample_ratio: float, exporter: str = "otlp", resource: Mapping[str, str] | None = None
) -> Tracing:
    """The tracer for `service`: parent-based sampling (a sampled incoming trace is followed; a new one is recorded
    at `sample_ratio`), spans exported in batches off the request path. `exporter`: "otlp" (OTLP over HTTP to
    OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318; needs the `traces` extra), "console", or
    "file:PATH" (one JSON object a span)."""
    if sample_ratio <= 0:
        return DISABLED
    try:
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
        from opentelemetry.trace import INVALID_SPAN, SpanKind, get_current_span, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise TracingError(
            "EDGEREC_TRACE_SAMPLE is set but opentelemetry-sdk is not installed: pip install 'edgerec[traces]'"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, **(resource or {})}),
        sampler=ParentBased(ALWAYS_ON),  # roots are drawn by Tracing itself, before the SDK is called
    )
    span_exporter = _exporter(exporter)
    # A file is for a person reading it now: each span as it ends. OTLP goes in batches, off the request path.
    processor = (
        SimpleSpanProcessor(span_exporter) if exporter.startswith("file:") else BatchSpanProcessor(span_exporter)
    )
    provider.add_span_processor(processor)
    return Tracing(
        enabled=True,
        service=service,
        ratio=sample_ratio,
        _tracer=provider.get_tracer("edgerec"),
        _provider=provider,
        _propagator=TraceContextTextMapPropagator(),
        _root=Context(),
        _kinds=(SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT),
        _in_context=set_span_in_context,
        _current_span=get_current_span,
        _unsampled=INVALID_SPAN,
    )


def _exporter(spec: str) -> Any:
    if spec == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingError(
                "EDGEREC_TRACE_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                "pip install 'edgerec[traces]'"
            ) from None
        return OTLPSpanExporter()
    if spec == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return JsonLinesExporter(Path(check_exporter(spec)[5:]))


@dataclass
class JsonLinesExporter:
    """Spans as JSON lines in a file (appended; one object a span, the SDK's own JSON form)."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(json.loads(span.to_json())) + "\n" for span in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans a JsonLinesExporter wrote."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
