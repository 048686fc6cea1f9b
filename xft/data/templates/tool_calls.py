"""How an assistant's tool calls are written into the trained reply, and read back.

Each ToolCallStyle renders a message's `tool_calls` (in Python and as jinja, the two
agree) and parses generated text back into calls: `parse_tool_calls` is the one
parser behind `xft chat` (BoundTemplate.parse_reply) and `xft serve`, so a reply is
read the way training wrote it. Calls are xft's form (xft.data.conversation.tool_call):
`{"type": "function", "function": {"name", "arguments": dict}[, "id"]}`.
"""

import json
import re
from dataclasses import dataclass

from xft.data.conversation import tool_call
from xft.data.templates.jinja_text import jinja_raise, tojson
from xft.errors import RecordError


@dataclass(frozen=True)
class ToolCallStyle:
    """How an assistant message with tool_calls renders (all of it is the trained reply)."""

    prefix: str  # scaffolding before the reply
    suffix: str  # end-of-turn marker after the calls (trained)
    separator: str  # untrained text after the turn
    render: object  # (template, message) -> the calls as text
    jinja: str  # the same as a jinja snippet (message in scope)
    # generated text -> (content, calls), or None when it holds no calls that parse: the
    # inverse of render. None for a style whose text cannot be read back (MOSS commands do
    # not name their argument).
    parse: object = None


def parse_tool_calls(style, text):
    """(content, calls) of generated `text` (special tokens kept) in tool-call style `style`
    (a key of TOOL_CALL_STYLES, or None); None when it holds no calls that parse, so the
    text is plain content."""
    parser = TOOL_CALL_STYLES[style].parse if style in TOOL_CALL_STYLES else None
    if parser is None:
        return None
    try:
        return parser(text)
    except (json.JSONDecodeError, RecordError):
        return None


def _read_call(item, name_key="name", arguments_keys=("arguments",)):
    """One call from a parsed JSON object; RecordError when it is not one."""
    if not isinstance(item, dict):
        raise RecordError("a tool call must be a JSON object")
    arguments = next((item[key] for key in arguments_keys if key in item), {})
    return tool_call(item.get(name_key), arguments, item.get("id"))


# --------------------------------------------------------------- qwen (Qwen2.5, Qwen3)

def _qwen_calls(template, msg):
    calls = "".join('\n<tool_call>\n{"name": "' + call["function"]["name"] + '", "arguments": '
                    + tojson(call["function"]["arguments"]) + "}\n</tool_call>"
                    for call in msg["tool_calls"])
    return msg["content"] + calls if msg["content"] else calls[1:]


_QWEN_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", flags=re.DOTALL)


def _parse_qwen_calls(text):
    """Content before the first '<tool_call>', and each block's JSON object."""
    blocks = _QWEN_CALL.findall(text)
    if not blocks:
        return None
    calls = [_read_call(json.loads(block)) for block in blocks]
    return text[:text.index("<tool_call>")].rstrip("\n"), calls


_QWEN_CALLS_JINJA = (
    "{%- set ns = namespace(calls='') -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set ns.calls = ns.calls + '\\n<tool_call>\\n{\"name\": \"' + call.function.name"
    " + '\", \"arguments\": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' -%}"
    "{%- endfor -%}"
    "{{ message['content'] + ns.calls if message['content'] else ns.calls[1:] }}")


# ------------------------------------------------------------------- mistral (v0.3)

def check_mistral_call_id(call_id, where):
    """Mistral's templates need 9-character call ids (and refuse others)."""
    if not isinstance(call_id, str) or len(call_id) != 9:
        raise RecordError("Mistral tool call ids must be 9-character strings", field=where)


def _mistral_calls(template, msg):
    items = []
    for i, call in enumerate(msg["tool_calls"]):
        check_mistral_call_id(call.get("id"), f"tool_calls[{i}].id")
        items.append(tojson(call["function"])[:-1] + ', "id": "' + call["id"] + '"}')
    return "[TOOL_CALLS] [" + ", ".join(items) + "]"


def _parse_mistral_calls(text):
    """'[TOOL_CALLS] [{"name", "arguments", "id"}, ...]': the reply is only the calls."""
    marker = "[TOOL_CALLS]"
    if not text.lstrip().startswith(marker):
        return None
    items = json.loads(text.lstrip()[len(marker):])
    return "", [_read_call(item) for item in (items if isinstance(items, list) else [items])]


_MISTRAL_CALLS_JINJA = (
    "{{ '[TOOL_CALLS] [' }}"
    "{%- for call in message.tool_calls -%}"
    "{{ (call.function | tojson)[:-1] + ', \"id\": \"' + call.id + '\"}' }}"
    "{%- if not loop.last -%}{{ ', ' }}{%- endif -%}"
    "{%- endfor -%}{{ ']' }}")


# --------------------------------------------------- mistral_v7 (Mistral Small 3.2)

def _mistral_v7_calls(template, msg):
    if msg["content"]:
        raise RecordError("Mistral v7 tool calls cannot carry text besides the calls",
                          field="content")
    out = []
    for i, call in enumerate(msg["tool_calls"]):
        check_mistral_call_id(call.get("id"), f"tool_calls[{i}].id")
        out.append("[TOOL_CALLS]" + call["function"]["name"] + "[CALL_ID]" + call["id"]
                   + "[ARGS]" + tojson(call["function"]["arguments"]))
    return "".join(out)


_V7_CALL = re.compile(r"\[TOOL_CALLS\](.*?)\[CALL_ID\](.*?)\[ARGS\]", flags=re.DOTALL)


def _parse_mistral_v7_calls(text):
    """'[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}' per call."""
    heads = list(_V7_CALL.finditer(text))
    if not heads or text[:heads[0].start()].strip():
        return None
    calls = []
    for head, after in zip(heads, heads[1:] + [None]):
        arguments = text[head.end():after.start() if after else len(text)]
        calls.append(tool_call(head.group(1), json.loads(arguments), head.group(2)))
    return "", calls


_MISTRAL_V7_CALLS_JINJA = (
    "{%- if message['content'] -%}"
    + jinja_raise("Mistral v7 tool calls cannot carry text besides the calls") + "{%- endif -%}"
    "{%- for call in message.tool_calls -%}"
    "{{ '[TOOL_CALLS]' + call.function.name + '[CALL_ID]' + call.id + '[ARGS]'"
    " + (call.function.arguments | tojson) }}"
    "{%- endfor -%}")


# ---------------------------------------------------------- llama3 (Llama 3.1 / 3.2 / 3.3)

def _llama3_calls(template, msg):
    if len(msg["tool_calls"]) != 1:
        raise RecordError("Llama 3.1 replies make exactly one tool call", field="tool_calls")
    if msg["content"]:
        raise RecordError("Llama 3.1 tool calls cannot carry text besides the call",
                          field="content")
    function = msg["tool_calls"][0]["function"]
    return ('{"name": "' + function["name"] + '", "parameters": '
            + tojson(function["arguments"]) + "}")


def _parse_llama3_call(text):
    """'{"name": ..., "parameters": {...}}': the whole reply is one JSON call."""
    if not text.strip().startswith("{"):
        return None
    item = json.loads(text)
    if not isinstance(item, dict) or "name" not in item:
        return None
    return "", [_read_call(item, arguments_keys=("parameters", "arguments"))]


_LLAMA3_CALLS_JINJA = (
    "{%- if message.tool_calls | length != 1 -%}"
    + jinja_raise("Llama 3.1 replies make exactly one tool call") + "{%- endif -%}"
    "{%- if message['content'] -%}"
    + jinja_raise("Llama 3.1 tool calls cannot carry text besides the call") + "{%- endif -%}"
    "{%- set call = message.tool_calls[0].function -%}"
    "{{ '{\"name\": \"' + call.name + '\", \"parameters\": ' + (call.arguments | tojson)"
    " + '}' }}")


# ------------------------------------------------------------------------------- glm4

# GLM-4 writes a call as an assistant message whose `metadata` is the function name and whose
# content is the JSON arguments ('<|assistant|>name\n{...}'; a plain reply has empty metadata,
# '<|assistant|>\ntext'). Several calls are several such messages in a row.
_GLM4_TURN = "<|assistant|>"


def _glm4_calls(template, msg):
    if msg["content"]:
        raise RecordError("GLM-4 tool calls cannot carry text besides the calls",
                          field="content")
    return _GLM4_TURN.join(call["function"]["name"] + "\n" + tojson(call["function"]["arguments"])
                           for call in msg["tool_calls"])


def _parse_glm4_calls(text):
    """'name\n{...}' per call, calls joined by '<|assistant|>'. parse_reply only passes text
    that does not open with the line break of a plain reply."""
    calls = []
    for segment in text.split(_GLM4_TURN):
        name, newline, arguments = segment.partition("\n")
        if not (newline and name.strip() and arguments.lstrip().startswith("{")):
            return None
        calls.append(tool_call(name.strip(), json.loads(arguments)))
    return "", calls


_GLM4_CALLS_JINJA = (
    "{%- if message['content'] -%}"
    + jinja_raise("GLM-4 tool calls cannot carry text besides the calls") + "{%- endif -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- if not loop.first -%}{{ '" + _GLM4_TURN + "' }}{%- endif -%}"
    "{{ call.function.name + '\\n' + (call.function.arguments | tojson) }}"
    "{%- endfor -%}")


# ------------------------------------------------------------------------------ moss

def _moss_argument(call, where):
    """A MOSS plugin call's single argument as command text: xft.data.formats.moss unquotes
    a plain string literal and keeps any other argument as written."""
    arguments = call["function"]["arguments"]
    values = list(arguments.values()) if isinstance(arguments, dict) else []
    if len(values) != 1 or not isinstance(values[0], str):
        raise RecordError("MOSS commands take exactly one string argument", field=where)
    return values[0] if '"' in values[0] else '"' + values[0] + '"'


def _moss_calls(template, msg):
    if msg["content"]:
        raise RecordError("MOSS commands cannot carry text besides the calls", field="content")
    thoughts = msg.get("reasoning_content")
    commands = ", ".join(call["function"]["name"] + "("
                         + _moss_argument(call, f"tool_calls[{i}].function.arguments") + ")"
                         for i, call in enumerate(msg["tool_calls"]))
    return (("<|Inner Thoughts|>: " + thoughts + "<eot>\n" if thoughts else "")
            + "<|Commands|>: " + commands + "<eoc>")


_MOSS_CALLS_JINJA = (
    "{%- if message['content'] -%}"
    + jinja_raise("MOSS commands cannot carry text besides the calls") + "{%- endif -%}"
    "{%- if message.reasoning_content -%}"
    "{{ '<|Inner Thoughts|>: ' + message.reasoning_content + '<eot>\\n' }}{%- endif -%}"
    "{%- set ns = namespace(calls=[]) -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set values = call.function.arguments.values() | list -%}"
    "{%- if values | length != 1 or values[0] is not string -%}"
    + jinja_raise("MOSS commands take exactly one string argument") + "{%- endif -%}"
    "{%- set argument = values[0] if '\"' in values[0] else '\"' + values[0] + '\"' -%}"
    "{%- set ns.calls = ns.calls + [call.function.name + '(' + argument + ')'] -%}"
    "{%- endfor -%}"
    "{{ '<|Commands|>: ' + ns.calls | join(', ') + '<eoc>' }}")

TOOL_CALL_STYLES = {
    # Qwen2.5 / ChatML: calls follow the content inside the assistant turn.
    "qwen": ToolCallStyle("<|im_start|>assistant\n", "<|im_end|>", "\n", _qwen_calls,
                          _QWEN_CALLS_JINJA, _parse_qwen_calls),
    # Mistral v0.3: the reply is only the calls, closed by EOS.
    "mistral": ToolCallStyle("", "{eos_token}", "", _mistral_calls, _MISTRAL_CALLS_JINJA,
                             _parse_mistral_calls),
    # Mistral Small 3.2 (v7 / tekken): '[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}' per call, EOS.
    "mistral_v7": ToolCallStyle("", "{eos_token}", "", _mistral_v7_calls,
                                _MISTRAL_V7_CALLS_JINJA, _parse_mistral_v7_calls),
    # Llama 3.1+: one '{"name": ..., "parameters": {...}}' call as the whole reply.
    "llama3": ToolCallStyle("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>",
                            "", _llama3_calls, _LLAMA3_CALLS_JINJA, _parse_llama3_call),
    # GLM-4: '<|assistant|>name\n{...}' per call; the first '<|assistant|>' is scaffolding,
    # the rest (inner '<|assistant|>'s included) the model writes. The '<|observation|>' that
    # opens the results ends the reply (trained, the template's tool_opening_ends_reply).
    "glm4": ToolCallStyle(_GLM4_TURN, "", "", _glm4_calls, _GLM4_CALLS_JINJA, _parse_glm4_calls),
    # MOSS-003: '<|Inner Thoughts|>: ...<eot>\n<|Commands|>: Name("arg"), ...<eoc>' (the
    # thoughts are optional); tags and all are the model's output, so all of it is trained.
    "moss": ToolCallStyle("", "", "\n", _moss_calls, _MOSS_CALLS_JINJA),
}


def check_tool_calls(calls, where):
    if not isinstance(calls, list):
        raise RecordError("must be a list", field=where)
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                and "arguments" in function):
            raise RecordError("must be {'function': {'name': ..., 'arguments': ...}}",
                              field=f"{where}[{j}]")
