"""`xft template list` and `xft template render`: inspect what a template trains.

`render` reads JSON Lines of {"messages": [...]} (OpenAI-style messages; tool
messages and assistant `tool_calls` are kept) and writes, per line, the
rendered text, its token ids and its labels (-100 where nothing is trained),
exactly as training would build them.
"""

import json
import sys
from pathlib import Path

from xft.data.conversation import check_conversation
from xft.data.encode import labels_from_spans
from xft.data.json_lines import json_lines
from xft.data.templates import TEMPLATES, get_template
from xft.errors import DataError, RecordError


def list_templates(out=sys.stdout):
    width = max(len(name) for name in TEMPLATES)
    for name in sorted(TEMPLATES):
        print(f"{name:<{width}}  {TEMPLATES[name].description}", file=out)


def load_tokenizer(path):
    """The tokenizer at `path`, loaded as training loads it (xft.model.build)."""
    from xft.config.schema import TokenizerCfg
    from xft.model.build import build_tokenizer

    return build_tokenizer(TokenizerCfg(path=path), path)


def encode_messages(messages, template, tokenizer):
    """{'text', 'input_ids', 'labels'} for one conversation."""
    rendered = template.render(messages)
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    labels = labels_from_spans(enc["input_ids"], enc["offset_mapping"], rendered.loss_spans)
    return {"text": rendered.text, "input_ids": enc["input_ids"], "labels": labels}


def _messages(record):
    if not isinstance(record, dict):
        raise RecordError(f"line must be a JSON object, got {type(record).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise RecordError("missing or not a list", field="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RecordError("must be an object with role and content", field=f"messages[{i}]")
        for key in ("role", "content"):
            if key not in msg:
                raise RecordError("missing field", field=f"messages[{i}].{key}")
    check_conversation(messages)
    return messages


def render_file(template_name, tokenizer_path, input_path, output_path=None, train_on="all"):
    """Encode every line of input_path; returns the number of lines written."""
    if not Path(input_path).is_file():  # before the tokenizer loads
        raise DataError("file not found", file=input_path)
    tokenizer = load_tokenizer(tokenizer_path)
    template = get_template(template_name, tokenizer, train_on)
    lines = []
    for where, record in json_lines(input_path):
        try:
            result = encode_messages(_messages(record), template, tokenizer)
        except RecordError as e:
            raise DataError(e.reason, file=where, field=e.field) from None
        lines.append(json.dumps(result, ensure_ascii=False))
    text = "".join(line + "\n" for line in lines)
    if output_path is None:
        sys.stdout.write(text)
    else:
        Path(output_path).write_text(text, encoding="utf-8")
    return len(lines)
