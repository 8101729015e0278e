"""The extraction task as the models see it: one instruction, defined here and nowhere else."""
from __future__ import annotations

INSTRUCTION = (
    "Extract the drugs taken and the adverse events from this report as JSON "
    "{\"drugs\": [...], \"adverse_events\": [...]}. Copy the report's own words. "
    "Skip symptoms the reporter denies and the illness being treated. "
    "Use [] when there is none; never invent a drug."
)


def user_message(report_text: str) -> str:
    """The user turn: the instruction, then the report."""
    return f"{INSTRUCTION}\n\nReport:\n{report_text}"
