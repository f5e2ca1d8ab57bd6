"""A local stand-in for the WaveSpeed InfiniteTalk API, with faults a test can switch on.

It renders real (small) MP4s and signs webhooks the way WaveSpeed does, so the pipeline is
exercised end to end without spending money or reaching the internet.
"""

from .faults import Faults
from .server import WaveSpeedStandin
from .tasks import Delivery, PlannedFaults, Task

__all__ = ["Delivery", "Faults", "PlannedFaults", "Task", "WaveSpeedStandin"]
