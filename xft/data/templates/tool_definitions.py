"""Where and how the tool definitions (the function schemas a conversation may call: the
system message's `tools`, or apply_chat_template's `tools=`) are rendered. They are
prompt text, never trained."""

from dataclasses import dataclass

from xft.data.templates.jinja_text import jinja_literal, tojson
from xft.errors import RecordError

PLACEMENTS = ("system", "system_turn", "last_user", "first_user")


@dataclass(frozen=True)
class ToolDefinitionStyle:
    """Where and how the tool definitions render (prompt text, never trained)."""

    # 'system': appended to the system prompt (the default one when the conversation has none)
    # 'system_turn': a system turn of their own (the style writes its header), before the
    #                system prompt's (GLM-4)
    # 'last_user': a block just before the last user message
    # 'first_user': put in front of the first user message's content (Llama 3.1)
    placement: str
    render: object  # tools -> text
    jinja: str  # the same as a jinja snippet: sets `tools_text` from `tool_defs`
    joiner: str = ""  # between a system prompt and the definitions (none without one)

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"tool definitions placement must be one of {PLACEMENTS}, got "
                             f"{self.placement!r}")


_QWEN_TOOLS_HEAD = ("# Tools\n\nYou may call one or more functions to assist with the user "
                    "query.\n\nYou are provided with function signatures within <tools></tools> "
                    "XML tags:\n<tools>")
_QWEN_TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function "
                    "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def _qwen_tools(tools):
    return _QWEN_TOOLS_HEAD + "".join("\n" + tojson(tool) for tool in tools) + _QWEN_TOOLS_TAIL


_QWEN_TOOLS_JINJA = (
    "{%- set tools_ns = namespace(text='') -%}"
    "{%- for tool in tool_defs -%}"
    "{%- set tools_ns.text = tools_ns.text + '\\n' + (tool | tojson) -%}"
    "{%- endfor -%}"
    "{%- set tools_text = " + jinja_literal(_QWEN_TOOLS_HEAD) + " + tools_ns.text + "
    + jinja_literal(_QWEN_TOOLS_TAIL) + " -%}")


def _mistral_tools(tools):
    # As Mistral v0.3's template writes them: string values are quoted, not JSON-escaped.
    items = []
    for tool in tools:
        fields = ", ".join(f'"{key}": "{value}"' if isinstance(value, str)
                           else f'"{key}": {tojson(value)}'
                           for key, value in tool["function"].items() if key != "return")
        items.append('{"type": "function", "function": {' + fields + "}}")
    return "[AVAILABLE_TOOLS] [" + ", ".join(items) + "][/AVAILABLE_TOOLS]"


_MISTRAL_TOOLS_JINJA = (
    "{%- set tools_ns = namespace(text='') -%}"
    "{%- for tool in tool_defs -%}"
    "{%- set fields = namespace(text='') -%}"
    "{%- for key, value in tool.function.items() if key != 'return' -%}"
    "{%- set fields.text = fields.text + '\"' + key + '\": '"
    " + ('\"' + value + '\"' if value is string else (value | tojson))"
    " + ('' if loop.last else ', ') -%}"
    "{%- endfor -%}"
    "{%- set tools_ns.text = tools_ns.text + '{\"type\": \"function\", \"function\": {'"
    " + fields.text + '}}' + ('' if loop.last else ', ') -%}"
    "{%- endfor -%}"
    "{%- set tools_text = '[AVAILABLE_TOOLS] [' + tools_ns.text + '][/AVAILABLE_TOOLS]' -%}")


def _mistral_v7_tools(tools):
    return "[AVAILABLE_TOOLS]" + tojson(tools) + "[/AVAILABLE_TOOLS]"


_MISTRAL_V7_TOOLS_JINJA = (
    "{%- set tools_text = '[AVAILABLE_TOOLS]' + (tool_defs | tojson) + '[/AVAILABLE_TOOLS]' -%}")

_LLAMA3_TOOLS_HEAD = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\nRespond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n")


def _llama3_tools(tools):
    return _LLAMA3_TOOLS_HEAD + "".join(tojson(tool, indent=4) + "\n\n" for tool in tools)


_LLAMA3_TOOLS_JINJA = (
    "{%- set tools_ns = namespace(text=" + jinja_literal(_LLAMA3_TOOLS_HEAD) + ") -%}"
    "{%- for tool in tool_defs -%}"
    "{%- set tools_ns.text = tools_ns.text + (tool | tojson(indent=4)) + '\\n\\n' -%}"
    "{%- endfor -%}"
    "{%- set tools_text = tools_ns.text -%}")

_GLM4_TOOLS_HEAD = (
    "<|system|>\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具")
_GLM4_TOOL_TAIL = "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


def _glm4_tools(tools):
    return _GLM4_TOOLS_HEAD + "".join(
        "\n## " + tool["function"]["name"] + "\n\n" + tojson(tool["function"], indent=4)
        + _GLM4_TOOL_TAIL for tool in tools)


_GLM4_TOOLS_JINJA = (
    "{%- set tools_ns = namespace(text=" + jinja_literal(_GLM4_TOOLS_HEAD) + ") -%}"
    "{%- for tool in tool_defs -%}"
    "{%- set tools_ns.text = tools_ns.text + '\\n## ' + tool.function.name + '\\n\\n'"
    " + (tool.function | tojson(indent=4)) + " + jinja_literal(_GLM4_TOOL_TAIL) + " -%}"
    "{%- endfor -%}"
    "{%- set tools_text = tools_ns.text -%}")

TOOL_DEFINITION_STYLES = {
    # Qwen2.5: a '# Tools' section with one JSON schema per line, after the system prompt.
    "qwen": ToolDefinitionStyle("system", _qwen_tools, _QWEN_TOOLS_JINJA, joiner="\n\n"),
    # Mistral v0.3: [AVAILABLE_TOOLS] [...][/AVAILABLE_TOOLS] before the last [INST].
    "mistral": ToolDefinitionStyle("last_user", _mistral_tools, _MISTRAL_TOOLS_JINJA),
    # Mistral Small 3.2 (v7): [AVAILABLE_TOOLS] + the JSON list, before the last [INST].
    "mistral_v7": ToolDefinitionStyle("last_user", _mistral_v7_tools, _MISTRAL_V7_TOOLS_JINJA),
    # Llama 3.1+ (its default, tools_in_user_message): instructions and each schema as
    # indented JSON, in front of the first user message.
    "llama3": ToolDefinitionStyle("first_user", _llama3_tools, _LLAMA3_TOOLS_JINJA),
    # GLM-4: a system turn of its own, the Chinese assistant preamble and, per function, its
    # name as a heading and its spec as indented JSON (one line break before '## ': the
    # official jinja's second is eaten by trim_blocks) (the official template's other,
    # built-in tool types, python/simple_browser/cogview, are not function specs: refused).
    "glm4": ToolDefinitionStyle("system_turn", _glm4_tools, _GLM4_TOOLS_JINJA),
}


def check_tools(tools, where):
    if not isinstance(tools, list):
        raise RecordError("must be a list of tool specs", field=where)
    for j, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)):
            raise RecordError("must be {'type': 'function', 'function': {'name': ..., ...}}",
                              field=f"{where}[{j}]")
