"""Format map functions: one raw dataset record → a list of messages.

Each function takes the record (a dict) and returns messages (see
xft.data.conversation). It raises RecordError naming the field when the record
is unusable; the pipeline adds the file and record index.
"""

from xft.data.conversation import check_conversation, message
from xft.errors import ConfigError, RecordError


def _text_field(record, name, required=True):
    value = record.get(name)
    if value is None:
        if required:
            raise RecordError("missing field", field=name)
        return ""
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__}", field=name)
    return value


def alpaca(record):
    """Alpaca: instruction/input/output, with optional `system` and `history`.

    Example: {"instruction": "Translate to French", "input": "Hello", "output": "Bonjour",
              "system": "You translate.", "history": [["Hi", "Hello! How can I help?"]]}
    The user turn is the instruction followed by the input on a new line.
    """
    instruction = _text_field(record, "instruction")
    extra = _text_field(record, "input", required=False)
    output = _text_field(record, "output")
    if not output.strip():
        raise RecordError("output is empty", field="output")
    messages = []
    system = _text_field(record, "system", required=False)
    if system:
        messages.append(message("system", system))
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("must be a list of [user, assistant] pairs", field="history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(t, str) for t in pair)):
            raise RecordError("must be a [user, assistant] pair of strings", field=f"history[{i}]")
        messages += [message("user", pair[0]), message("assistant", pair[1])]
    user = f"{instruction}\n{extra}" if extra else instruction
    messages += [message("user", user), message("assistant", output)]
    return messages


def openai(record):
    """OpenAI chat fine-tuning: {"messages": [{"role": ..., "content": ...}, ...]}.

    A message may carry "loss": false (or the OpenAI "weight": 0) to exclude it
    from training.
    """
    raw = record.get("messages")
    if raw is None:
        raise RecordError("missing field", field="messages")
    if not isinstance(raw, list):
        raise RecordError(f"must be a list, got {type(raw).__name__}", field="messages")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RecordError("must be an object with role and content", field=f"messages[{i}]")
        for key in ("role", "content"):
            if key not in item:
                raise RecordError("missing field", field=f"messages[{i}].{key}")
        loss = item.get("loss")
        if "weight" in item and loss is None:
            loss = bool(item["weight"])
        messages.append(message(item["role"], item["content"], loss))
    return messages


FORMATS = {"alpaca": alpaca, "openai": openai}


def get_format(name):
    if name not in FORMATS:
        raise ConfigError(f"unknown dataset format '{name}' (known: {', '.join(sorted(FORMATS))})")
    return FORMATS[name]


def to_conversation(format_name, record):
    """Map a record with the named format and check the result."""
    if not isinstance(record, dict):
        raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
    messages = get_format(format_name)(record)
    check_conversation(messages)
    return messages
