"""S3 inbox notifications (through SQS) become WaveSpeed tasks."""

import json

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.submission import process_submit_message

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    def time_left() -> float:
        return lambda_context.get_remaining_time_in_millis() / 1000

    process_submit_message(json.loads(record.body), get_pipeline(), time_left)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:  # type: ignore[type-arg]
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
