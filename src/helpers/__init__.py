"""Shared logic of the adverse-event extraction study; the notebooks call into it."""

__version__ = "0.1.0"
