"""WaveSpeed's signed webhook, answered within milliseconds."""

import json

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.callbacks import WebhookRefusal, WebhookRequest, accept_webhook
from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline

app = APIGatewayHttpResolver()


@app.post("/webhooks/wavespeed")
def wavespeed_webhook() -> dict[str, str]:
    event = app.current_event
    request = WebhookRequest(
        headers=event.headers,
        body=event.body,
        is_base64_encoded=bool(event.is_base64_encoded),
        raw_query=event.raw_query_string or "",
    )
    outcome = accept_webhook(request, get_pipeline())
    return {"outcome": outcome.value}


@app.exception_handler(WebhookRefusal)  # type: ignore[untyped-decorator]
def refused(exc: WebhookRefusal) -> Response[str]:
    """Every refusal, by its type: 4xx for the sender's fault, 503 while the secret is not set."""
    if exc.status_code < 500:
        metrics.add_metric(name="WebhooksRejected", unit="Count", value=1)
        logger.warning("webhook refused", extra={"status": exc.status_code, "reason": str(exc)[:500]})
    return Response(
        status_code=exc.status_code,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": exc.answer}),
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:  # type: ignore[type-arg]
    return app.resolve(event, context)
