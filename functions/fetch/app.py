"""Finished tasks (through SQS) become stored videos and one ledger line each."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from infinitetalk_core.delivery import deliver
from infinitetalk_core.observability import logger, metrics
from infinitetalk_core.pipeline import FetchRequest, get_pipeline
from infinitetalk_core.sqs_batch import BatchResponse, SqsRecord, process_sqs_batch


def fetch_record(record: SqsRecord) -> None:
    deliver(FetchRequest.model_validate_json(record.body).job_id, get_pipeline())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> BatchResponse:  # type: ignore[type-arg]
    return process_sqs_batch(event, fetch_record)
