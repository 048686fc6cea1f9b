"""The intermediate form every dataset format is mapped to.

A conversation is a list of messages: {'role', 'content'} plus an optional
'loss' flag (None means the template's default: assistant messages are trained,
everything else is not). Plain dicts keep it cheap to store in HF datasets.
"""

from xft.errors import RecordError

ROLES = ("system", "user", "assistant", "tool")


def message(role, content, loss=None):
    return {"role": role, "content": content, "loss": loss}


def check_conversation(messages):
    """Raise RecordError unless `messages` is a conversation a template can render."""
    if not messages:
        raise RecordError("conversation is empty", field="messages")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if msg["role"] not in ROLES:
            raise RecordError(f"unknown role {msg['role']!r} (expected one of {list(ROLES)})",
                              field=f"{where}.role")
        if not isinstance(msg["content"], str):
            raise RecordError(f"content must be a string, got {type(msg['content']).__name__}",
                              field=f"{where}.content")
        if msg["role"] == "system" and i != 0:
            raise RecordError("a system message may only come first", field=f"{where}.role")
    dialogue = [m for m in messages if m["role"] != "system"]
    if not dialogue or dialogue[0]["role"] != "user":
        raise RecordError("the first non-system message must come from the user", field="messages")
    if not any(m["role"] == "assistant" for m in dialogue):
        raise RecordError("conversation has no assistant message to train on", field="messages")
