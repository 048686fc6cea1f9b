"""Tool calls in a generated answer, as the OpenAI API returns them.

The template parses the answer (`parse_reply`: a thinking model's thoughts split off,
then its tool-call style, xft.data.templates.tool_calls), as `xft chat` does, so the
server reads a reply the way training wrote it; this module only shapes the calls as
OpenAI's
`{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`.
An answer whose calls do not parse is plain content.
"""

import json
import uuid


def openai_tool_calls(template, raw_text):
    """(content or None, OpenAI tool_calls) of an answer's text (special tokens kept), or
    None when it holds no calls that parse."""
    reply = template.parse_reply(raw_text)
    if not reply.get("tool_calls"):
        return None
    return (reply["content"].strip() or None,
            [_openai(call, template.tool_calls) for call in reply["tool_calls"]])


def _openai(call, style):
    call_id = call.get("id")
    if not isinstance(call_id, str):  # Mistral's templates need 9-character ids
        call_id = uuid.uuid4().hex[:9] if style.startswith("mistral") else \
            "call_" + uuid.uuid4().hex
    function = call["function"]
    return {"id": call_id, "type": "function",
            "function": {"name": function["name"],
                         "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}
