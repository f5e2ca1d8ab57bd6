"""The Powertools singletons every handler and core module logs and counts through."""

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="infinitetalk")
metrics = Metrics(namespace="InfiniteTalk", service="infinitetalk")
