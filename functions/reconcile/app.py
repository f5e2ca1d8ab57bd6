"""The scheduled sweep that recovers lost webhooks, submits and fetches; or an operator's decision on a held job."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.reconciliation import reconcile_event


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict[str, int]:  # type: ignore[type-arg]
    return reconcile_event(event, get_pipeline())
