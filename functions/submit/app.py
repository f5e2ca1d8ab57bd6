"""S3 inbox notifications (through SQS) become WaveSpeed tasks."""

import json

from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.sqs_batch import BatchResponse, SqsRecord, process_sqs_batch
from infinitetalk_core.submission import process_submit_message


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> BatchResponse:  # type: ignore[type-arg]
    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    def submit_record(record: SqsRecord) -> None:
        process_submit_message(json.loads(record.body), get_pipeline(), time_left)

    return process_sqs_batch(event, submit_record)
