"""Tool calls in a generated answer, read back in the form the template renders them.

The template's tool-call style (xft.data.templates.base.TOOL_CALL_STYLES) says how
training rendered an assistant's calls; this is its inverse for the two styles of
templates that render tool definitions (qwen, mistral). Each call is normalised by
the same `tool_call` as the training formats, then shaped as OpenAI's
`{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`.
An answer whose calls do not parse is plain content.
"""

import json
import re
import uuid

from xft.data.conversation import tool_call
from xft.errors import RecordError

_QWEN_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_MISTRAL_MARK = "[TOOL_CALLS]"


def parse_tool_calls(style, raw_text):
    """(content or None, OpenAI tool_calls) of an answer's text (special tokens kept), or
    None when it holds no calls that parse."""
    try:
        if style == "qwen" and _QWEN_CALL.search(raw_text):
            content = raw_text[:raw_text.index("<tool_call>")].strip()
            calls = [_call(json.loads(body)) for body in _QWEN_CALL.findall(raw_text)]
            return content or None, [_openai(call, style) for call in calls]
        if style == "mistral" and raw_text.lstrip().startswith(_MISTRAL_MARK):
            items = json.loads(raw_text.lstrip()[len(_MISTRAL_MARK):])
            calls = [_call(item) for item in (items if isinstance(items, list) else [items])]
            return None, [_openai(call, style) for call in calls]
    except (json.JSONDecodeError, RecordError):
        pass
    return None


def _call(item):
    if not isinstance(item, dict):
        raise RecordError("a tool call must be a JSON object")
    return tool_call(item.get("name"), item.get("arguments", {}), item.get("id"))


def _openai(call, style):
    call_id = call.get("id")
    if not isinstance(call_id, str):  # Mistral's template needs 9-character ids
        call_id = uuid.uuid4().hex[:9] if style == "mistral" else "call_" + uuid.uuid4().hex
    function = call["function"]
    return {"id": call_id, "type": "function",
            "function": {"name": function["name"],
                         "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}
