"""WaveSpeed's signed webhook, answered within milliseconds."""

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.callbacks import MalformedWebhook, WebhookRejected, accept_webhook
from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.webhooks import raw_body

app = APIGatewayHttpResolver()


@app.post("/webhooks/wavespeed")
def wavespeed_webhook() -> dict[str, str]:
    event = app.current_event
    body = raw_body(event.body, bool(event.is_base64_encoded))
    job_id = (event.query_string_parameters or {}).get("job")
    outcome = accept_webhook(event.headers, body, job_id, get_pipeline())
    return {"outcome": outcome.value}


@app.exception_handler(WebhookRejected)  # type: ignore[untyped-decorator]
def rejected(exc: WebhookRejected) -> Response[str]:
    metrics.add_metric(name="WebhooksRejected", unit="Count", value=1)
    logger.warning("webhook rejected", extra={"reason": str(exc)})
    return Response(status_code=401, content_type=content_types.APPLICATION_JSON, body='{"error":"unauthorized"}')


@app.exception_handler(MalformedWebhook)  # type: ignore[untyped-decorator]
def malformed(exc: MalformedWebhook) -> Response[str]:
    logger.warning("signed webhook with an unreadable body", extra={"reason": str(exc)[:500]})
    return Response(status_code=400, content_type=content_types.APPLICATION_JSON, body='{"error":"unreadable body"}')


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:  # type: ignore[type-arg]
    return app.resolve(event, context)
