"""Tracing is off by default, follows an incoming traceparent, and sends its own on."""

from __future__ import annotations

import pytest

from edgerec.core.tracing import DISABLED, TracingError, configure, parse_sample_ratio, read_spans

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_by_default_no_span_and_no_header():
    tracing = configure("edge", 0.0)
    assert tracing is DISABLED and not tracing.enabled
    with tracing.span("edge.recommendation", {"traceparent": INCOMING}) as span:
        assert span is None
    assert tracing.inject({}) == {}


def test_a_span_continues_the_incoming_trace_and_its_child_call_carries_it_on(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing = configure("edgerec-edge", 1.0, f"file:{path}")
    try:
        with tracing.span("edge.recommendation", {"traceparent": INCOMING}, {"region": "GB"}):
            with tracing.span("edge.model"):
                outgoing = tracing.inject({})
    finally:
        tracing.shutdown()
    spans = {s["name"]: s for s in read_spans(path)}
    answer, model = spans["edge.recommendation"], spans["edge.model"]
    assert answer["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"
    assert answer["parent_id"] == "0x00f067aa0ba902b7" and answer["attributes"] == {"region": "GB"}
    assert model["parent_id"] == answer["context"]["span_id"]
    assert outgoing["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert outgoing["traceparent"].split("-")[2] == model["context"]["span_id"][2:]
    assert answer["resource"]["attributes"]["service.name"] == "edgerec-edge"


def test_an_unsampled_incoming_trace_is_not_recorded(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing = configure("edgerec-edge", 1.0, f"file:{path}")
    try:
        with tracing.span("edge.recommendation", {"traceparent": INCOMING[:-2] + "00"}):
            pass
    finally:
        tracing.shutdown()
    assert read_spans(path) == []


@pytest.mark.parametrize("text", ["abc", "-0.1", "1.5"])
def test_a_bad_sample_ratio_is_refused_with_the_setting_named(text):
    with pytest.raises(TracingError, match="EDGEREC_TRACE_SAMPLE"):
        parse_sample_ratio(text)


def test_an_unknown_exporter_is_refused_with_the_setting_named():
    with pytest.raises(TracingError, match="EDGEREC_TRACE_EXPORTER"):
        configure("edge", 0.5, "zipkin")


def test_a_new_trace_outside_the_sample_costs_no_span_but_a_sampled_parent_is_still_followed(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing = configure("edgerec-edge", 1e-12, f"file:{path}")
    try:
        assert not tracing.start("edge.recommendation").is_recording()  # a root: drawn out of the sample
        with tracing.span("sync GET /v1/sync/deltas") as span:
            assert span is None and tracing.inject({}) == {}
        followed = tracing.start("edge.recommendation", tracing.extract(INCOMING))
        assert followed.is_recording()
        followed.end()
        assert tracing.extract("00-not-a-traceparent-01") is None
    finally:
        tracing.shutdown()
    assert [s["name"] for s in read_spans(path)] == ["edge.recommendation"]
