"""Sends telemetry to a hub with the official OpenTelemetry SDK and OTLP
exporters (from PyPI), configured only by the OTEL_* environment, as an
instrumented application (or Claude Code) is:

  OTEL_EXPORTER_OTLP_PROTOCOL   grpc | http/protobuf (default http/protobuf)
  OTEL_EXPORTER_OTLP_ENDPOINT   the hub (http://127.0.0.1:3010, or :4317 for gRPC)
  OTEL_EXPORTER_OTLP_HEADERS    Authorization=Bearer <token>, when the hub has one

--scenario genai: one agent run: an invoke_agent span around a chat span
  (usage: 1000 input, 500 output tokens of gpt-5) and an execute_tool span,
  a gen_ai.evaluation.result span event, a gen_ai.evaluation.result log
  record, a plain log record, and gen_ai.client.token.usage points.
--scenario claude: the log records of tests/fixtures/claude-code/session.json
  (Claude Code's own events, attribute for attribute), through the SDK's log
  exporter, with the resource service.name=claude-code.

Prints one JSON line: {"trace_id": <hex>, "records": n} once everything is
exported (the providers are shut down, which flushes them).
"""

import argparse
import json
import os
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry._logs import SeverityNumber

GRPC = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc"
if GRPC:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

HERE = os.path.dirname(os.path.abspath(__file__))
MS = 1_000_000


def genai():
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "travel-bot")})
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    logging = LoggerProvider(resource=resource)
    logging.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[reader])

    tracer = tracing.get_tracer("travel-bot")
    logger = logging.get_logger("travel-bot")
    t0 = time.time_ns() - 10_000 * MS
    agent = tracer.start_span(
        "invoke_agent planner",
        kind=trace.SpanKind.INTERNAL,
        start_time=t0,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": "conv-py-1",
            "gen_ai.request.model": "gpt-5",
        },
    )
    ctx = trace.set_span_in_context(agent)
    chat = tracer.start_span(
        "chat gpt-5",
        context=ctx,
        kind=trace.SpanKind.CLIENT,
        start_time=t0 + 100 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-5",
            "gen_ai.response.model": "gpt-5-2025-08-07",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
            "gen_ai.response.finish_reasons": ["tool_calls"],
        },
    )
    chat.end(end_time=t0 + 1100 * MS)
    tool = tracer.start_span(
        "execute_tool search_flights",
        context=ctx,
        start_time=t0 + 1200 * MS,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search_flights",
            "gen_ai.tool.call.id": "call_42",
            "gen_ai.tool.type": "function",
        },
    )
    tool.end(end_time=t0 + 1500 * MS)
    agent.add_event(
        "gen_ai.evaluation.result",
        {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9,
         "gen_ai.evaluation.score.label": "pass"},
        timestamp=t0 + 1900 * MS,
    )
    logger.emit(
        timestamp=t0 + 1950 * MS,
        context=ctx,
        event_name="gen_ai.evaluation.result",
        attributes={"gen_ai.evaluation.name": "groundedness", "gen_ai.evaluation.score.value": 0.2,
                    "gen_ai.evaluation.score.label": "fail", "gen_ai.conversation.id": "conv-py-1"},
    )
    logger.emit(
        timestamp=t0 + 1960 * MS,
        context=ctx,
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body="booked flight LH400",
        attributes={"booking.id": "B-1"},
    )
    agent.end(end_time=t0 + 2000 * MS)
    usage = meters.get_meter("travel-bot").create_histogram("gen_ai.client.token.usage", unit="{token}")
    for ty, n in (("input", 1000), ("output", 500)):
        usage.record(n, {"gen_ai.token.type": ty, "gen_ai.operation.name": "chat",
                         "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-5",
                         "gen_ai.response.model": "gpt-5-2025-08-07"})
    trace_id = format(agent.get_span_context().trace_id, "032x")
    tracing.shutdown()
    logging.shutdown()
    meters.shutdown()
    return {"trace_id": trace_id, "records": 2}


def any_value(v):
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"])
    raise ValueError(v)


def claude():
    with open(os.path.join(HERE, "..", "fixtures", "claude-code", "session.json")) as f:
        req = json.load(f)
    res = req["resourceLogs"][0]
    resource = Resource.create({a["key"]: any_value(a["value"]) for a in res["resource"]["attributes"]})
    logging = LoggerProvider(resource=resource)
    logging.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    scope = res["scopeLogs"][0]
    logger = logging.get_logger(scope["scope"]["name"], scope["scope"]["version"])
    records = scope["logRecords"]
    for r in records:
        logger.emit(
            timestamp=int(r["timeUnixNano"]),
            observed_timestamp=int(r["observedTimeUnixNano"]),
            severity_number=SeverityNumber(r["severityNumber"]),
            severity_text=r["severityText"],
            body=r["body"]["stringValue"],
            attributes={a["key"]: any_value(a["value"]) for a in r["attributes"]},
        )
    logging.shutdown()
    return {"trace_id": None, "records": len(records)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=["genai", "claude"], required=True)
    a = ap.parse_args()
    out = genai() if a.scenario == "genai" else claude()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
