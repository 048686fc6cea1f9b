"""`xft chat`: talk to a trained model with the template it was trained on.

MODEL may be a full model directory (or hub id) or an adapter directory written
by xft; for an adapter the base model is read from its adapter_config.json.
The default template is the one recorded in xft_meta.json at export time, else
the tokenizer's own chat_template ('auto').

Generation stops at the tokenizer's EOS, at the template's stop words (single
tokens) and at its stop strings (text, e.g. MOSS's `<eom>`, matched by
transformers' stop_strings); the stop text is never shown or kept in the
history. Greedy by default; `--temperature > 0` samples (seeded by `--seed`).

Three ways to use it: interactive (streamed answers with readline line editing;
Ctrl-C stops an answer and keeps the session, RESET clears the history, EXIT,
Ctrl-D or Ctrl-C at the prompt quits; a paste of several lines is one message
where the terminal marks pastes, `--multiline` ends each message at an empty
line), `--prompt TEXT` (one answer), `--prompt-file FILE` (JSONL in, JSONL out;
see docs/tools.md). An answer cut at --max-new-tokens is marked (a line in the
terminal, `finish_reason: "length"` in JSONL).
"""

import json
import sys
from pathlib import Path

from xft.data.templates import get_template
# The generation pieces live in xft.inference (training uses them too); re-exported here.
from xft.inference.chat import (ChatSession, Sampling, cut_at_stop,  # noqa: F401
                                stop_aware_streamer)
from xft.engine.export import read_meta
from xft.errors import ConfigError, DataError, XftError
from xft.model.build import load_causal_lm
from xft.outputs import incomplete_reason, require_model_dir
from xft.paths import MODEL_FILES, check_local, resolve_path

RESET, EXIT = "RESET", "EXIT"


def load_chat_model(model_path, adapter=None, template_name=None, bits=None):
    """(model, tokenizer, template) for a model dir/hub id, optionally with an adapter."""
    from transformers import AutoTokenizer

    for folder in (model_path, adapter):  # xft's own unfinished writes, named as such
        reason = folder is not None and incomplete_reason(Path(resolve_path(folder)))
        if reason:
            raise XftError(reason)
    check_local(model_path, "model directory", need=MODEL_FILES)
    if adapter is not None:
        check_local(adapter, "adapter directory", "--adapter", need=("adapter_config.json",))
    model_path = resolve_path(model_path)
    require_model_dir(model_path)
    if adapter is not None:
        require_model_dir(adapter, "adapter")
    adapter_config = Path(model_path) / "adapter_config.json"
    if adapter is None and adapter_config.is_file():
        adapter = model_path
        try:
            model_path = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        except (ValueError, KeyError) as e:
            raise XftError(f"{adapter_config} is damaged or incomplete ({e!r}); export the "
                           "adapter again") from None
        check_local(model_path, f"base model directory (base_model_name_or_path of "
                    f"{adapter_config})", need=MODEL_FILES)
    has_tokenizer = adapter and (Path(adapter) / "tokenizer_config.json").is_file()
    meta_dir = adapter if has_tokenizer else model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(meta_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer from '{meta_dir}': {e}") from None
    template_name = template_name or read_meta(meta_dir).get("template")
    if template_name is None:
        if not getattr(tokenizer, "chat_template", None):
            raise XftError(f"no chat template recorded in {meta_dir} and its tokenizer has none; "
                           "pass --template NAME (xft template list)")
        template_name = "auto"  # the tokenizer's own jinja template
    template = get_template(template_name, tokenizer)
    model = load_causal_lm(model_path, quantization_config=_quantization(bits))
    if adapter is not None:
        from xft.tools.merge import load_adapter

        model = load_adapter(model, adapter, model_path)
    model.eval()
    return model, tokenizer, template


def _quantization(bits):
    if bits is None:
        return None
    from xft.config.schema import QuantizationCfg
    from xft.model.quant import bitsandbytes_config

    return bitsandbytes_config(QuantizationCfg(bits=bits), "float32")


def read_prompt_file(path):
    """Conversations to answer, one JSON object a line:
    {"prompt": "...", "system": "..." (optional)} or {"messages": [..., {"role": "user", ...}]}."""
    from xft.data.conversation import check_conversation
    from xft.errors import RecordError

    from xft.data.json_lines import json_lines

    items = []
    for where, record in json_lines(path):
        try:
            items.append((record, _conversation(record, check_conversation)))
        except RecordError as e:
            raise DataError(e.reason, file=where, field=e.field) from None
    if not items:
        raise DataError("no prompts in the file", file=path)
    return items


def _conversation(record, check_conversation):
    from xft.data.formats.chat import openai
    from xft.data.questionable import check_strings
    from xft.errors import RecordError

    if not isinstance(record, dict):
        raise RecordError(f"line must be a JSON object, got {type(record).__name__}")
    check_strings(record)  # a lone surrogate names its field here, not in the tokenizer
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise RecordError("must be a non-empty list of messages", field="messages")
        messages = openai(record)  # OpenAI's optional fields read as its API defines them
        check_conversation(messages)
        if messages[-1].get("role") != "user":
            raise RecordError("the last message must be the user's, to be answered",
                              field=f"messages[{len(messages) - 1}].role")
        return messages
    prompt, system = record.get("prompt"), record.get("system")
    if not isinstance(prompt, str) or not prompt:
        raise RecordError("missing or not a non-empty string (or give 'messages')",
                          field="prompt")
    if system is not None and not isinstance(system, str):
        raise RecordError("must be a string", field="system")
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]


def answer_file(session, prompt_file, output=None):
    """Answer every line of prompt_file; JSONL {...the line, "answer"} to output or stdout."""
    items = read_prompt_file(prompt_file)  # every line checked before the first answer
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for record, messages in items:
            if session.system and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": session.system}, *messages]
            answer, reply = session.reply(messages)
            parsed = {k: reply[k] for k in ("tool_calls", "reasoning_content") if k in reply}
            # OpenAI's name for why an answer ended: "length" when cut at max_new_tokens.
            finish = "length" if session.hit_limit else "stop"
            out.write(json.dumps({**record, "answer": answer, **parsed, "finish_reason": finish},
                                 ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if output:
            out.close()
    return len(items)


def run_chat(args):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a person reads this terminal: no loading bars
    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template,
                                                 args.bits)
    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.repetition_penalty,
                        args.seed)
    session = ChatSession(model, tokenizer, template, args.system, args.max_new_tokens,
                          sampling)
    if args.prompt_file is not None:
        count = answer_file(session, args.prompt_file, args.output)
        if args.output:
            print(f"xft: wrote {count} answers to {args.output}")
        return
    if args.prompt is not None:
        print(session.ask(args.prompt))
        if session.hit_limit:  # on stderr: stdout stays the answer alone
            print(limit_marker(session.max_new_tokens), file=sys.stderr)
        return
    interactive(session, tokenizer, args.model, args.multiline)


def interactive(session, tokenizer, model_name, multiline=False):
    """The terminal conversation: streamed answers, Ctrl-C stops one, RESET, EXIT."""
    line_editing()
    end = "an empty line" if multiline else "Enter"
    print(f"Chatting with {model_name} (template {session.template.name}). {end} sends; "
          f"Ctrl-C stops an answer; {RESET} clears the history; {EXIT}, Ctrl-D or Ctrl-C "
          "here quits.")
    while True:
        try:
            question = read_message(multiline)
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if question == EXIT:
            return
        if question == RESET:
            session.reset()
            print("(history cleared)")
            continue
        if not question:
            continue
        print("Assistant: ", end="", flush=True)
        try:
            session.ask(question, streamer=stop_aware_streamer(tokenizer, session.stop_texts))
        except KeyboardInterrupt:
            print(f"\n{STOPPED}")
            continue
        if session.hit_limit:
            print(limit_marker(session.max_new_tokens))


STOPPED = "[stopped: this question and its answer are not kept in the history]"


def limit_marker(max_new_tokens):
    return f"[cut: the answer reached --max-new-tokens {max_new_tokens}]"


def line_editing():
    """Arrow keys, Ctrl-A/E, the session's earlier messages (Up) and whole pastes in `input()`.

    Python's input() uses GNU readline once the module is imported (when stdin and
    stdout are a terminal); where it is missing (Windows) input stays plain. Python turns
    readline's bracketed paste off for its own REPL; a chat wants it on: the terminal then
    marks a paste, and readline puts all its lines into the one message being edited
    (sent with Enter) instead of sending each line as a turn."""
    try:
        import readline
    except ImportError:
        return
    readline.parse_and_bind("set enable-bracketed-paste on")


def read_message(multiline=False):
    """One user message; with `multiline` (XTuner's convention) it ends at an empty line."""
    lines = [input("\nUser: ")]
    while multiline and lines[-1]:
        lines.append(input(""))
    return "\n".join(lines).strip()
