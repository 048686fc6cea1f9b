"""XTuner's own dataset layout (its `conversation` list), for SFT and pretraining."""

from xft.data.conversation import message
from xft.data.formats import fields


def xtuner(record):
    """XTuner: {"conversation": [{"system"?, "input", "output"}, ...]}, one item a turn.

    Example (the InternLM camp's personal-assistant homework):
    {"conversation": [{"system": "You are Xiaoxi.", "input": "Who are you?",
                       "output": "I am Xiaoxi, built by the xft team."},
                      {"input": "And your job?", "output": "Answering questions."}]}
    A turn's `system` (usually on the first only) becomes a system message before it.
    """
    messages = []
    for i, turn in enumerate(fields.items(record, "conversation")):
        where = f"conversation[{i}]"
        turn = fields.obj(turn, where)
        system = fields.text(turn, "system", required=False, where=f"{where}.system")
        if system:
            messages.append(message("system", system))
        messages.append(message("user", fields.text(turn, "input", allow_empty=True,
                                                    where=f"{where}.input")))
        messages.append(message("assistant", fields.text(turn, "output",
                                                         where=f"{where}.output")))
    return messages


def xtuner_pretrain(record):
    """XTuner's incremental-pretraining layout, a document.

    Example: {"conversation": [{"input": "", "output": "Tuna is an assistant..."}]} (the
    turns' outputs joined by newlines), or a plain {"text": "..."} record.
    """
    if "conversation" not in record and "text" in record:
        return fields.text(record, "text")
    parts = []
    for i, turn in enumerate(fields.items(record, "conversation")):
        turn = fields.obj(turn, f"conversation[{i}]")
        parts.append(fields.text(turn, "output", where=f"conversation[{i}].output"))
    return "\n".join(parts)
