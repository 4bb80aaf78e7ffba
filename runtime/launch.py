"""The 0.1.0 import path of :mod:`runtime.train.launch` (``from runtime.launch import train_run``), kept working."""

from runtime.train.launch import Overrides, RunResult, resume_run, train_run

__all__ = ["Overrides", "RunResult", "resume_run", "train_run"]
