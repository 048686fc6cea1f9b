"""Tool calls in a generated answer, as the OpenAI API returns them.

The template's tool-call style (xft.data.templates.tool_calls) parses the answer, the
same parser `xft chat` uses, so the server reads a reply the way training wrote it; this
module only shapes the calls as OpenAI's
`{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`.
An answer whose calls do not parse is plain content.
"""

import json
import uuid

from xft.data.templates.tool_calls import parse_tool_calls


def openai_tool_calls(style, raw_text):
    """(content or None, OpenAI tool_calls) of an answer's text (special tokens kept), or
    None when it holds no calls that parse."""
    parsed = parse_tool_calls(style, raw_text)
    if parsed is None:
        return None
    content, calls = parsed
    return content.strip() or None, [_openai(call, style) for call in calls]


def _openai(call, style):
    call_id = call.get("id")
    if not isinstance(call_id, str):  # Mistral's templates need 9-character ids
        call_id = uuid.uuid4().hex[:9] if style.startswith("mistral") else \
            "call_" + uuid.uuid4().hex
    function = call["function"]
    return {"id": call_id, "type": "function",
            "function": {"name": function["name"],
                         "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}
