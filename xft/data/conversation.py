"""The intermediate form every chat dataset format is mapped to.

A conversation is a list of messages (plain dicts, cheap to store and cache):

- every message: 'role' (system | user | assistant | tool), 'content' (str) and
  'loss' (None: the template's default, i.e. assistant messages are trained and
  nothing else; True/False forces it).
- a system message, first only, may carry 'tools': the function schemas the
  conversation may call, as OpenAI/HF tool specs ({'type': 'function',
  'function': {'name', 'description', 'parameters'}}). A system message whose
  record had tools but no system prompt has content None: "the configured or
  the template's default system prompt".
- an assistant message may carry 'tool_calls': [{'type': 'function',
  'function': {'name': str, 'arguments': dict}}] (plus an optional 'id'), and
  'reasoning_content': str (thoughts before the answer or call, e.g. MOSS inner
  thoughts); its content may then be ''.
- a tool message holds a tool's result; it follows an assistant message with
  tool_calls (or another tool message) and may carry 'name' / 'tool_call_id'.

A document (raw text for pretraining) is a plain str instead; see
xft.data.encode.encode_documents.
"""

import json

from xft.errors import RecordError

ROLES = ("system", "user", "assistant", "tool")


def message(role, content, loss=None, **extra):
    return {"role": role, "content": content, "loss": loss, **extra}


def tool_call(name, arguments, call_id=None, where="tool_calls"):
    """A normalised tool call; `arguments` may be a dict or a JSON object string."""
    if not isinstance(name, str) or not name.strip():
        raise RecordError("a tool call needs a non-empty string 'name'", field=where)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise RecordError(f"tool call arguments are not valid JSON ({e.msg})",
                              field=where) from None
    if not isinstance(arguments, dict):
        raise RecordError(f"tool call arguments must be an object, got "
                          f"{type(arguments).__name__}", field=where)
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


def with_system(messages, system):
    """`messages` with `system` as the system prompt where the record had none."""
    if system is None:
        return messages
    if messages and messages[0]["role"] == "system":
        if messages[0]["content"] is not None:
            return messages
        return [dict(messages[0], content=system)] + messages[1:]
    return [message("system", system)] + messages


def check_conversation(messages):
    """Raise RecordError unless `messages` is a conversation a template can render."""
    if not isinstance(messages, list):
        raise RecordError(f"a format must return a list of messages or a str document, got "
                          f"{type(messages).__name__}")
    if not messages:
        raise RecordError("conversation is empty", field="messages")
    previous = None
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        _check_message(msg, i, where, previous)
        previous = msg
    dialogue = [m for m in messages if m["role"] != "system"]
    if not dialogue or dialogue[0]["role"] != "user":
        raise RecordError("the first non-system message must come from the user", field="messages")
    if not any(m["role"] == "assistant" for m in dialogue):
        raise RecordError("conversation has no assistant message to train on", field="messages")


def _check_message(msg, i, where, previous):
    if not isinstance(msg, dict):
        raise RecordError(f"must be a dict, got {type(msg).__name__}", field=where)
    role = msg.get("role")
    if role not in ROLES:
        raise RecordError(f"unknown role {role!r} (expected one of {list(ROLES)})",
                          field=f"{where}.role")
    content = msg.get("content")
    placeholder_system = content is None and role == "system" and msg.get("tools")
    if not (isinstance(content, str) or placeholder_system):
        raise RecordError(f"content must be a string, got {type(content).__name__}",
                          field=f"{where}.content")
    if msg.get("loss") not in (None, True, False):
        raise RecordError(f"loss must be true, false or null, got {msg['loss']!r}",
                          field=f"{where}.loss")
    if role == "system" and i != 0:
        raise RecordError("a system message may only come first", field=f"{where}.role")
    if "tools" in msg and role != "system":
        raise RecordError("only a system message may carry tools", field=f"{where}.tools")
    if "tool_calls" in msg:
        calls = msg["tool_calls"]
        if role != "assistant":
            raise RecordError("only an assistant message may carry tool_calls",
                              field=f"{where}.tool_calls")
        if not isinstance(calls, list) or not calls:
            raise RecordError("must be a non-empty list", field=f"{where}.tool_calls")
        for j, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                    and isinstance(function.get("arguments"), dict)):
                raise RecordError("must be {'type': 'function', 'function': {'name': str, "
                                  "'arguments': dict}}", field=f"{where}.tool_calls[{j}]")
    if role == "assistant" and not (content.strip() or msg.get("tool_calls")
                                    or msg.get("reasoning_content")):
        raise RecordError("assistant message is empty", field=f"{where}.content")
    if role == "tool" and not (previous and (previous["role"] == "tool"
                                             or previous.get("tool_calls"))):
        raise RecordError("a tool message must follow an assistant message with tool_calls",
                          field=f"{where}.role")


EXTRA_PARTS = ("tools", "tool_calls", "reasoning_content")


def check_rendered(messages, render, template_name, text=None):
    """Raise RecordError when a template leaves a tool or reasoning part unrendered.

    `render(messages)` returns the rendered text. A part counts as rendered when
    the text changes without it, so templates of families without tool or
    reasoning support reject such records instead of dropping the part silently.
    `text` is the full rendering when the caller already has it.
    """
    if text is None:
        text = render(messages)
    for i, msg in enumerate(messages):
        for key in EXTRA_PARTS:
            if not msg.get(key):
                continue
            without = {k: v for k, v in msg.items() if k != key}
            try:
                if key == "reasoning_content":
                    # Thoughts count as rendered when the reply shows them while it ends the
                    # conversation: thinking templates (Qwen3) drop them from earlier turns.
                    dropped = render(messages[:i] + [msg]) == render(messages[:i] + [without])
                else:
                    dropped = render(messages[:i] + [without] + messages[i + 1:]) == text
            except RecordError:  # the template needs the part: it is rendered
                dropped = False
            if dropped:
                raise RecordError(f"template '{template_name}' does not render {key}",
                                  field=f"messages[{i}].{key}")
