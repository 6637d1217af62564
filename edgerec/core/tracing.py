"""Traces with OpenTelemetry: off unless a sample ratio is set, W3C `traceparent` honoured on the way in and sent on
the way out, exported by OTLP (or to a JSON-lines file). Spans carry no shopper id, not even the pseudonym.

Off is the default and costs a request one attribute read (`tracing.enabled`): the SDK is not even imported.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping, Sequence

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


@dataclass(frozen=True)
class Tracing:
    """The process's tracer, or none. `span()` is a context manager yielding the span (None when off)."""

    enabled: bool = False
    service: str = ""
    _tracer: Any = None
    _provider: Any = None
    _propagator: Any = None

    @contextlib.contextmanager
    def span(
        self, name: str, headers: Mapping[str, str] | None = None, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[Any]:
        """A span; a root of its own unless `headers` carry a traceparent (or a span is current)."""
        if not self.enabled:
            yield None
            return
        context = self._propagator.extract(headers) if headers is not None else None
        with self._tracer.start_as_current_span(name, context=context, attributes=dict(attributes or {})) as span:
            yield span

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
    """The tracer for `service`: parent-based sampling (a sampled incoming trace is followed; a new one is sampled at
    `sample_ratio`), spans exported in batches off the request path. `exporter`: "otlp" (OTLP over HTTP to
    OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318; needs the `traces` extra), "console", or
    "file:PATH" (one JSON object a span)."""
    if sample_ratio <= 0:
        return DISABLED
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise TracingError(
            "EDGEREC_TRACE_SAMPLE is set but opentelemetry-sdk is not installed: pip install 'edgerec[traces]'"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, **(resource or {})}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
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
        _tracer=provider.get_tracer("edgerec"),
        _provider=provider,
        _propagator=TraceContextTextMapPropagator(),
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
    if spec.startswith("file:") and len(spec) > 5:
        return JsonLinesExporter(Path(spec[5:]))
    raise TracingError(f"EDGEREC_TRACE_EXPORTER: one of {', '.join(EXPORTERS)}, not {spec!r}")


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
