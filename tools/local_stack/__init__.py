"""The whole pipeline on one machine, built from ``template.yaml``: for the demo, ``make up`` and the tests."""

from .stack import LocalStack, StackOptions

__all__ = ["LocalStack", "StackOptions"]
