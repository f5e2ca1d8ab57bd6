"""Finished tasks (through SQS) become stored videos and one ledger line each."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.delivery import deliver
from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import FetchRequest, get_pipeline

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    deliver(FetchRequest.model_validate_json(record.body).job_id, get_pipeline())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:  # type: ignore[type-arg]
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
