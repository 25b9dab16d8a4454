"""fast-reid's import path of the training event storage and its writers (they live in
:mod:`fastreid.engine.events`); ``TensorboardXWriter`` is fast-reid's name of ``TensorboardWriter``."""
from fastreid.engine.events import (CommonMetricPrinter, EventStorage, EventWriter, JSONWriter,
                                    TensorboardWriter, get_event_storage)

TensorboardXWriter = TensorboardWriter

__all__ = ["CommonMetricPrinter", "EventStorage", "EventWriter", "JSONWriter", "TensorboardWriter",
           "TensorboardXWriter", "get_event_storage"]
