"""Thinking models (Qwen3, DeepSeek-R1): how a reply's thoughts are rendered and trained.

A reply's thoughts (its reasoning_content, or the '<think>...</think>' block its content
starts with) render inside the reply as think[0] + thoughts + think[1] + answer, all of it
trained. Replies after the last user message carry the block (the final one always, empty
without thoughts, so the generation prompt is a prefix of it); earlier replies drop their
thoughts, as the official templates do, unless the template's think_history is 'keep'.
`emit_thinking_reply` (Python) and `thinking_reply_jinja` (exported) are the same rule.
"""

from xft.data.templates.jinja_text import jinja_literal
from xft.data.templates.tool_calls import TOOL_CALL_STYLES


def split_thoughts(msg):
    """(thoughts, answer) of an assistant message, as thinking templates read it: its
    reasoning_content, else a '<think>...</think>' block its content starts with."""
    content = msg["content"]
    if msg.get("reasoning_content") is not None:
        return msg["reasoning_content"], content
    if "</think>" in content:
        head, answer = content.split("</think>")[0], content.split("</think>")[-1]
        return head.rstrip("\n").split("<think>")[-1].lstrip("\n"), answer.lstrip("\n")
    return "", content


def parse_thoughts(template, text):
    """(thoughts or None, answer) of a generated reply: the inverse of the think block."""
    closing = template.think[1].strip()
    if closing not in text:
        return None, text
    thoughts, _, answer = text.partition(closing)
    return thoughts.removeprefix(template.think[0].strip()).strip("\n"), answer.lstrip("\n")


def emit_thinking_reply(template, msg, emit, trained, shows_thoughts, last):
    """A thinking model's reply: [think block] + answer [+ tool calls] + end of turn; all
    of it after the generation prompt is trained."""
    thoughts, answer = split_thoughts(msg)
    style = TOOL_CALL_STYLES[template.tool_calls] if msg.get("tool_calls") else None
    body = style.render(template, dict(msg, content=answer)) if style else answer
    if shows_thoughts and (last or thoughts):
        body = template.think[0] + thoughts.strip("\n") + template.think[1] + body.lstrip("\n")
    prefix = template._fill(style.prefix if style else template.assistant_prefix)
    text = prefix + body + template._fill(style.suffix if style else template.assistant_suffix)
    prompt = template._fill(template._generation_prompt())  # may open the think block (R1)
    covered = len(prompt) if text.startswith(prompt) else len(prefix)
    emit(text[:covered])
    emit(text[covered:], trained)
    emit(template._fill(style.separator if style else template.turn_separator))


def thinking_reply_jinja(template):
    """emit_thinking_reply as jinja (split_thoughts, the history rule), for the assistant
    branch of ChatTemplate.to_jinja."""
    keep = "true" if template.think_history == "keep" else "false"
    out = ["{%- set last_query = namespace(index=-1) -%}"
           "{%- for m in loop_messages -%}{%- if m['role'] == 'user' -%}"
           "{%- set last_query.index = loop.index0 -%}{%- endif -%}{%- endfor -%}"
           "{%- set answer = message['content'] -%}{%- set thoughts = '' -%}"
           "{%- if message.reasoning_content is defined and message.reasoning_content "
           "is not none -%}{%- set thoughts = message.reasoning_content -%}"
           "{%- elif '</think>' in answer -%}"
           "{%- set thoughts = answer.split('</think>')[0].rstrip('\\n')"
           ".split('<think>')[-1].lstrip('\\n') -%}"
           "{%- set answer = answer.split('</think>')[-1].lstrip('\\n') -%}{%- endif -%}"
           f"{{%- set shows = (loop.index0 > last_query.index or {keep}) "
           "and (loop.last or thoughts) -%}"]
    block = ("(" + jinja_literal(template.think[0]) + " + thoughts.strip('\\n') + "
             + jinja_literal(template.think[1]) + ")")
    if template.tool_calls:
        style = TOOL_CALL_STYLES[template.tool_calls]
        out.append("{%- if message.tool_calls -%}" + template._expr(style.prefix)
                   + "{%- if shows -%}{{ " + block + " }}{%- endif -%}"
                   + style.jinja.replace("message['content']", "answer")
                   + template._expr(style.suffix + style.separator) + "{%- else -%}")
    out.append(template._expr(template.assistant_prefix)
               + "{%- if shows -%}{{ " + block + " + answer.lstrip('\\n') }}"
               "{%- else -%}{{ answer }}{%- endif -%}"
               + template._expr(template.assistant_suffix + template.turn_separator))
    if template.tool_calls:
        out.append("{%- endif -%}")
    return "".join(out)
