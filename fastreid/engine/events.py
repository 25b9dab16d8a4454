"""The training event storage and writers, by their engine path; they live in :mod:`fastreid.utils.events`."""
from fastreid.utils.events import (CommonMetricPrinter, EventStorage, EventWriter, JSONWriter,  # noqa: F401
                                   TensorboardWriter, get_event_storage)

__all__ = ["CommonMetricPrinter", "EventStorage", "EventWriter", "JSONWriter", "TensorboardWriter",
           "get_event_storage"]
