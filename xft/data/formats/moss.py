"""MOSS-003 SFT records (fnlp/moss-003-sft-data) → conversations.

A record: {"meta_instruction": "...", "num_turns": 2, "chat": {"turn_1": {
    "Human": "<|Human|>: 1+1?<eoh>\\n",
    "Inner Thoughts": "<|Inner Thoughts|>: I should use the calculator.<eot>\\n",
    "Commands": "<|Commands|>: Calculate(\\"1+1\\")<eoc>\\n",
    "Tool Responses": "<|Results|>:\\nCalculate(\\"1+1\\") => '2'\\n<eor>\\n",
    "MOSS": "<|MOSS|>: It is 2.<eom>\\n"}, "turn_2": {...}}}

Each turn becomes: user (Human); when MOSS calls a plugin, an assistant message with
the commands as 'tool_calls' and the thoughts as 'reasoning_content' (trained)
followed by the plugin results as a tool message (never trained); then the MOSS
reply (trained), which carries the thoughts as 'reasoning_content' when no plugin
was called. The meta_instruction is the system prompt, verbatim. "None" parts are
left out. The meta_instruction's switches are enforced: thoughts when "Inner
thoughts: disabled", or a command for a plugin that is not enabled, make the record
bad. A command `Calculate("1+1")` becomes the call {"name": "Calculate",
"arguments": {"expression": "1+1"}}, the argument named as in the meta_instruction's
"API: Calculate(expression)".
"""

import re

from xft.data.conversation import message, tool_call
from xft.data.formats import fields
from xft.errors import RecordError

# The parts of a turn: record key → (opening tag, closing tag).
PARTS = {
    "Human": ("<|Human|>:", "<eoh>"),
    "Inner Thoughts": ("<|Inner Thoughts|>:", "<eot>"),
    "Commands": ("<|Commands|>:", "<eoc>"),
    "Tool Responses": ("<|Results|>:", "<eor>"),
    "MOSS": ("<|MOSS|>:", "<eom>"),
}
_ENABLED_API = re.compile(r"^- [^:\n]+: enabled\. API: (\w+)\((\w*)\)", re.M)
_THOUGHTS_SWITCH = re.compile(r"^- Inner thoughts: (enabled|disabled)", re.M)
_CALL_START = re.compile(r"\b([A-Za-z_]\w*)\(", re.ASCII)


def moss(record):
    """MOSS-003 SFT: meta_instruction + chat.turn_N.{Human, Inner Thoughts, Commands,
    Tool Responses, MOSS}.

    Example: see the module docstring (xft.data.formats.moss), which also gives the mapping.
    """
    meta = fields.text(record, "meta_instruction")
    apis = dict(_ENABLED_API.findall(meta))  # plugin name → its argument name
    switch = _THOUGHTS_SWITCH.search(meta)
    thoughts_allowed = not switch or switch.group(1) == "enabled"
    if "chat" not in record:
        raise fields.missing_field(record, "chat")
    chat = fields.obj(record["chat"], "chat")
    num_turns = record.get("num_turns", len(chat))
    if not isinstance(num_turns, int) or isinstance(num_turns, bool) or num_turns < 1:
        raise RecordError(f"must be a positive integer, got {num_turns!r}", field="num_turns")
    if len(chat) != num_turns:
        raise RecordError(f"num_turns is {num_turns} but chat has {len(chat)} turns",
                          field="num_turns")
    messages = [message("system", meta)]
    for n in range(1, num_turns + 1):
        key = f"turn_{n}"
        if key not in chat:
            raise fields.missing_field(chat, key, f"chat.{key}")
        messages += _turn(fields.obj(chat[key], f"chat.{key}"), f"chat.{key}", apis,
                          thoughts_allowed)
    return messages


def _turn(turn, where, apis, thoughts_allowed):
    body = {name: _body(turn, name, f"{where}.{name}") for name in PARTS}
    for name in ("Human", "MOSS"):
        if body[name] is None:
            raise RecordError("is empty (None)", field=f"{where}.{name}")
    thoughts, commands, results = body["Inner Thoughts"], body["Commands"], body["Tool Responses"]
    if thoughts and not thoughts_allowed:
        raise RecordError("has thoughts but the meta_instruction says 'Inner thoughts: disabled'",
                          field=f"{where}.Inner Thoughts")
    calls = _calls(commands, apis, f"{where}.Commands") if commands else []
    if calls and not results:
        raise RecordError("commands were issued but there are no tool responses",
                          field=f"{where}.Tool Responses")
    if results and not calls:
        raise RecordError("tool responses without a command", field=f"{where}.Tool Responses")
    thinking = {"reasoning_content": thoughts} if thoughts else {}
    out = [message("user", body["Human"])]
    if calls:
        out += [message("assistant", "", tool_calls=calls, **thinking),
                message("tool", results, loss=False)]
        thinking = {}
    out.append(message("assistant", body["MOSS"], **thinking))
    return out


def _body(turn, name, where):
    """The text between a part's tags, or None for a "None" part."""
    if name not in turn:
        raise fields.missing_field(turn, name, where)
    value = fields.text(turn, name, where=where)
    opening, closing = PARTS[name]
    value = value.strip()
    if not (value.startswith(opening) and value.endswith(closing)):
        raise RecordError(f"must look like '{opening} ...{closing}'", field=where)
    inner = value[len(opening):-len(closing)].strip()
    return None if inner.rstrip(".") == "None" else inner


def _calls(commands, apis, where):
    """Tool calls of a Commands part: every `Name(...)` of an enabled plugin, in order.

    MOSS commands may be one call, several separated by commas, or a numbered list with
    comments; the text outside the calls is dropped.
    """
    calls, pos = [], 0
    while True:
        match = _CALL_START.search(commands, pos)
        if not match:
            break
        name = match.group(1)
        end = _closing_paren(commands, match.end())
        if end is None:
            raise RecordError(f"unbalanced parentheses in the {name}(...) command", field=where)
        if name not in apis:
            known = ", ".join(sorted(apis)) or "none"
            raise RecordError(f"command {name}(...) calls a plugin the meta_instruction does "
                              f"not enable (enabled: {known})", field=where)
        argument = commands[match.end():end].strip()
        if len(argument) >= 2 and argument[0] == argument[-1] == '"' and '"' not in argument[1:-1]:
            argument = argument[1:-1]  # the usual single string literal
        calls.append(tool_call(name, {apis[name] or "input": argument}, where=where))
        pos = end + 1
    if not calls:
        raise RecordError(f"no plugin call found in {commands!r}", field=where)
    return calls


def _closing_paren(text, start):
    """Index of the ')' closing the '(' before `start`, skipping quoted strings."""
    depth, quote, i = 1, None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None
