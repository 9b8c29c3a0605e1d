"""The discrete-event engine: clock, event heap, random streams. It knows nothing of kernels."""

from rtvm.engine.core import (
    LATE,
    NORMAL,
    URGENT,
    Event,
    Simulator,
    StopSimulation,
    TimeTravelError,
)
from rtvm.engine.streams import RandomStream, RandomStreams

__all__ = [
    "LATE",
    "NORMAL",
    "URGENT",
    "Event",
    "RandomStream",
    "RandomStreams",
    "Simulator",
    "StopSimulation",
    "TimeTravelError",
]
