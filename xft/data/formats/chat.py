"""Map functions for chat-style records: alpaca, alpaca_zh, openai, sharegpt, qa, guanaco."""

import json
import re

from xft.data.conversation import message, tool_call
from xft.data.formats import fields
from xft.errors import RecordError


def alpaca(record):
    """Alpaca: instruction / input / output, with optional `system` and `history`.

    Example: {"instruction": "Translate to French", "input": "Hello", "output": "Bonjour",
              "system": "You translate.", "history": [["Hi", "Hello! How can I help?"]]}
    The user turn is the instruction, then a newline and the input when it is not empty;
    `history` holds earlier [user, assistant] turns (LLaMA-Factory's alpaca layout).
    """
    return _alpaca(record, "instruction", "input", "output")


def alpaca_zh(record):
    """Chinese Alpaca data: `alpaca` read from the `_zh` fields when the record has them.

    Example: bilingual GPT-4 Alpaca sets (e.g. alpaca-data-gpt4-chinese) carry both languages:
    {"instruction": "...", "instruction_zh": "给出三个保持健康的小贴士。", "input_zh": "",
     "output_zh": "1. 均衡饮食……", ...}; the Chinese fields are used. Records without
    `instruction_zh` (e.g. LLaMA-Factory's alpaca_zh_demo.json, which is already Chinese
    in the plain fields) map exactly like `alpaca`.
    """
    if "instruction_zh" in record:
        return _alpaca(record, "instruction_zh", "input_zh", "output_zh")
    return alpaca(record)


def _alpaca(record, instruction_key, input_key, output_key):
    prompt = alpaca_prompt(record, instruction_key, input_key)
    return prompt + [message("assistant", fields.text(record, output_key))]


def alpaca_prompt(record, instruction_key="instruction", input_key="input"):
    """The messages of an alpaca record before its answer: system, history, the user turn."""
    instruction = fields.text(record, instruction_key)
    extra = fields.text(record, input_key, required=False)
    messages = []
    system = fields.text(record, "system", required=False)
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
    return messages + [message("user", user)]


def openai(record):
    """OpenAI chat fine-tuning records, tool calls included.

    Example: {"messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
        {"role": "assistant", "content": "It is 18C and sunny.", "loss": false}],
      "tools": [{"type": "function", "function": {"name": "get_weather", ...}}]}
    A message with "loss": false (or the OpenAI "weight": 0) is not trained; "loss": true
    trains any message. `arguments` may be a JSON string (OpenAI) or an object.
    Optional fields are read as the OpenAI API defines them: `tool_calls` null or [] means
    no calls; an assistant's `content` may be null or absent beside tool calls, and any
    content may be a list of text parts ({"type": "text", "text": ...}); `reasoning_content`
    (DeepSeek/vLLM's name for a reply's thoughts) is kept; `name` is kept on tool messages
    and ignored on others (no chat template renders participant names); other fields
    (`refusal`, `audio`, `function_call: null`...) are ignored.
    """
    messages = []
    for i, item in enumerate(fields.items(record, "messages")):
        where = f"messages[{i}]"
        item = fields.obj(item, where)
        if "role" not in item:
            raise fields.missing_field(item, "role", f"{where}.role")
        loss = item.get("loss")
        if "weight" in item and loss is None:
            loss = _weight(item["weight"], f"{where}.weight")
        extra = {}
        if item.get("tool_calls"):
            extra["tool_calls"] = _openai_tool_calls(item["tool_calls"], f"{where}.tool_calls")
        for key in ("name", "tool_call_id"):
            if item.get(key) is not None and item["role"] == "tool":
                extra[key] = item[key]
        reasoning = item.get("reasoning_content")
        if reasoning is not None and item["role"] == "assistant":
            extra["reasoning_content"] = fields.text(item, "reasoning_content",
                                                     where=f"{where}.reasoning_content")
        if "content" not in item and not extra.get("tool_calls"):
            raise fields.missing_field(item, "content", f"{where}.content")
        content = _openai_content(item.get("content"), f"{where}.content")
        if content is None and (extra.get("tool_calls") or extra.get("reasoning_content")):
            content = ""  # OpenAI sends null content next to tool calls
        messages.append(message(item["role"], content, loss, **extra))
    return _attach_tools(messages, record.get("tools"))


def _weight(value, where):
    """OpenAI's per-message weight: 0 or 1. Anything else (the string "0" is truthy) is
    refused rather than guessed."""
    if value in (0, 1) and not isinstance(value, str):
        return bool(value)
    raise RecordError(f"weight must be 0 or 1, got {type(value).__name__} {value!r}", field=where)


def _openai_content(content, where):
    """A message's content as text: a string, null, or a list of text parts."""
    if not isinstance(content, list):
        return content  # str, or None / a wrong type that check_conversation names
    texts = []
    for j, part in enumerate(content):
        part = fields.obj(part, f"{where}[{j}]")
        if part.get("type") != "text":
            raise RecordError(f"only text parts can be trained, got type {part.get('type')!r}",
                              field=f"{where}[{j}].type")
        texts.append(fields.text(part, "text", where=f"{where}[{j}].text", allow_empty=True))
    return "".join(texts)


def _openai_tool_calls(calls, where):
    if not isinstance(calls, list):
        raise RecordError(f"must be a list, got {type(calls).__name__}", field=where)
    out = []
    for j, call in enumerate(calls):
        call = fields.obj(call, f"{where}[{j}]")
        function = fields.obj(call.get("function"), f"{where}[{j}].function")
        out.append(tool_call(function.get("name"), function.get("arguments", {}), call.get("id"),
                             where=f"{where}[{j}].function"))
    return out


def _attach_tools(messages, tools, where="tools"):
    """Put the record's tool specs on its system message (made with content None if absent)."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise RecordError(f"is a string but not valid JSON ({e.msg})", field=where) from None
    if not tools:
        return messages
    if not isinstance(tools, list):
        raise RecordError(f"must be a list of tool specs, got {type(tools).__name__}", field=where)
    specs = []
    for i, spec in enumerate(tools):
        spec = fields.obj(spec, f"{where}[{i}]")
        if "function" not in spec:  # a bare function schema, as in ShareGPT/glaive data
            spec = {"type": "function", "function": spec}
        if not isinstance(spec["function"], dict) or not spec["function"].get("name"):
            raise RecordError("a tool spec needs a function name", field=f"{where}[{i}]")
        specs.append(spec)
    if messages and messages[0]["role"] == "system":
        return [dict(messages[0], tools=specs)] + messages[1:]
    return [message("system", None, tools=specs)] + messages


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool",
                  "tool": "tool"}


def sharegpt(record):
    """ShareGPT: {"conversations": [{"from": ..., "value": ...}], "system"?, "tools"?}.

    Example (LLaMA-Factory's glaive tool-call demo):
    {"conversations": [
        {"from": "human", "value": "Find me a chicken recipe"},
        {"from": "function_call", "value": "{\\"name\\": \\"search_recipes\\", \\"arguments\\":
                                             {\\"ingredients\\": [\\"chicken\\"]}}"},
        {"from": "observation", "value": "{\\"recipes\\": [...]}"},
        {"from": "gpt", "value": "Here is one: ..."}],
     "tools": "[{\\"name\\": \\"search_recipes\\", \\"description\\": ..., \\"parameters\\": ...}]"}
    human/user → user, gpt/assistant → assistant, system → system, function_call → an
    assistant message whose tool_calls are the JSON call (one object or a list),
    observation/tool → tool. `tools` (a JSON string or a list) goes on the system message.
    Turns written {"role": ..., "content": ...} (miniGPT/minimind) are read alike.
    """
    messages = []
    system = fields.text(record, "system", required=False)
    if system:
        messages.append(message("system", system))
    for i, turn in enumerate(fields.items(record, "conversations")):
        where = f"conversations[{i}]"
        turn = fields.obj(turn, where)
        # Turns as role/content pairs (the miniGPT/minimind layout) read the same way.
        speaker_key, value_key = ("role", "content") if "from" not in turn and "role" in turn \
            else ("from", "value")
        speaker = turn.get(speaker_key)
        if speaker not in SHAREGPT_ROLES:
            if speaker_key not in turn:
                raise fields.missing_field(turn, "from", f"{where}.from")
            raise RecordError(f"unknown speaker {speaker!r} (expected one of "
                              f"{sorted(SHAREGPT_ROLES)}, or map yours with the dataset's "
                              "'tags')", field=f"{where}.{speaker_key}")
        value = fields.text(turn, value_key, where=f"{where}.{value_key}", allow_empty=True)
        if speaker == "function_call":
            messages.append(message("assistant", "",
                                    tool_calls=_sharegpt_calls(value, f"{where}.value")))
        else:
            messages.append(message(SHAREGPT_ROLES[speaker], value))
    return _attach_tools(messages, record.get("tools"))


def _sharegpt_calls(value, where):
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as e:
        raise RecordError(f"a function_call must be JSON ({e.msg})", field=where) from None
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for call in calls:
        call = fields.obj(call, where)
        out.append(tool_call(call.get("name"), call.get("arguments", {}), where=where))
    return out


_QA_PROMPT = re.compile(r"^\s*###\s*Question:\s*(.*?)\s*(?:###\s*Answer:\s*)?$", re.S)


def qa(record):
    """Question / answer pairs: {"question": ..., "answer": ...}.

    Example (Lamini docs): {"question": "### Question:\\nWhat is Lamini?\\n\\n### Answer:",
                            "answer": "Lamini is an LLM engine ..."}
    A question already wrapped in a "### Question: ... ### Answer:" prompt is unwrapped,
    since the chat template supplies the prompt scaffolding. The question may be empty
    (Lamini has a few deliberate "empty input" examples); the answer may not.
    """
    question = fields.text(record, "question", allow_empty=True)
    match = _QA_PROMPT.match(question)
    if match:
        question = match.group(1)
    # An empty question is kept: such records teach a reply to empty input.
    return [message("user", question), message("assistant", fields.text(record, "answer"))]


_GUANACO_TURN = re.compile(r"###\s*(Human|Assistant)\s*:")


def guanaco(record):
    """Guanaco / OpenAssistant text records: {"text": "### Human: ... ### Assistant: ..."}.

    Example: {"text": "### Human: What is a monopsony?### Assistant: A market with one
              buyer.### Human: Give an example.### Assistant: A mill town."}
    Turns must alternate starting with Human; each turn is stripped of surrounding space.
    """
    text = fields.text(record, "text")
    pieces = _GUANACO_TURN.split(text)
    if pieces[0].strip():
        raise RecordError("text must start with '### Human:'", field="text")
    messages = []
    for n, (speaker, content) in enumerate(zip(pieces[1::2], pieces[2::2])):
        expected = "Human" if n % 2 == 0 else "Assistant"
        if speaker != expected:
            raise RecordError(f"turn {n + 1} is '### {speaker}:' but '### {expected}:' was "
                              f"expected (turns alternate, Human first)", field="text")
        if not content.strip():
            raise RecordError(f"turn {n + 1} ('### {speaker}:') is empty", field="text")
        messages.append(message("user" if speaker == "Human" else "assistant", content.strip()))
    if not messages:
        raise RecordError("text has no '### Human:' turn", field="text")
    return messages
