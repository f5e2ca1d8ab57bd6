"""WaveSpeed's signed webhook, answered within milliseconds."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.callbacks import answer_http_event
from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:  # type: ignore[type-arg]
    return answer_http_event(event, get_pipeline())
