"""The extraction task as the models see it: one instruction, defined here and nowhere else."""
from __future__ import annotations

INSTRUCTION = (
    "Extract the drugs and adverse events from the adverse-event report below. "
    "Answer with JSON only: {\"drugs\": [...], \"adverse_events\": [...]}. "
    "List every medicine the reporter says was taken, written as in the report. "
    "List every reaction the reporter experienced on a drug, copied word for word from the report. "
    "Do not list symptoms the reporter says they do not have, or the illness being treated. "
    "Use an empty list when there is none; never invent a drug."
)


def user_message(report_text: str) -> str:
    """The user turn: the instruction, then the report."""
    return f"{INSTRUCTION}\n\nReport:\n{report_text}"
