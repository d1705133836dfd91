"""Trace context for the gateway: the partner's current OpenTelemetry span, when it has one.

The SDK does not depend on OpenTelemetry. A partner whose code traces with it has
`opentelemetry-api` installed and has imported `opentelemetry.trace` (a span can only be
made current through it), so the client sends that span's context on (W3C `traceparent`,
or whatever OTEL_PROPAGATORS names) and the gateway's spans join the partner's trace. A
partner without it pays nothing: `opentelemetry.propagate` reads its propagators' entry
points when imported, which would cost every `import gateway.sdk` some milliseconds.
"""

from __future__ import annotations

import sys


def outgoing() -> list[tuple[str, str]]:
    """Metadata entries carrying the caller's current span context; [] when the caller
    has no valid OpenTelemetry span (or never imported OpenTelemetry). The span alone is
    sent, in an otherwise empty context: the caller's baggage may hold its own data, and
    the gateway reads no more than the span from it."""
    if "opentelemetry.trace" not in sys.modules:
        return []
    from opentelemetry import propagate, trace  # noqa: PLC0415 - only for partners who trace
    from opentelemetry.context import Context  # noqa: PLC0415

    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return list(carrier.items())
