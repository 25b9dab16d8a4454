"""Colour console logging (termcolor) plus a plain log file in the output folder."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from termcolor import colored

_LEVEL_COLORS = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "red"}


class _ColorfulFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        color = _LEVEL_COLORS.get(record.levelno)
        if color is None:
            return msg
        return colored(record.levelname, color, attrs=["bold"]) + " " + msg


def setup_logger(output: Optional[str] = None, distributed_rank: int = 0, name: str = "fastreid",
                 color: bool = True) -> logging.Logger:
    """Configure the ``name`` logger: colour console on rank 0, a log file per rank under ``output``.

    Calling it again (e.g. for a second training stage) replaces the handlers instead of adding more.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    datefmt = "%m/%d %H:%M:%S"
    plain = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt=datefmt)
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        if color:
            ch.setFormatter(_ColorfulFormatter(
                colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s", datefmt=datefmt))
        else:
            ch.setFormatter(plain)
        logger.addHandler(ch)
    if output:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a", encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(plain)
        logger.addHandler(fh)
    return logger
