"""`xft template list|render|check`: inspect what a template trains.

`render` reads a dataset as training reads it (xft.data.pipeline: any format, a
"CONFIG.py:NAME" map function, `columns`/`tags`, a registry name, a run's heldout.jsonl;
by default JSON Lines of {"messages": [...]}, OpenAI-style) and writes, per record, the
rendered text, its token ids and its labels (-100 where nothing is trained), exactly as
training would build them.

`check MODEL_DIR` is the one-minute check before a long fine-tune: it renders
sample conversations (or --input) with xft's template and with the tokenizer's
own jinja and reports text/id equality, whether the generation prompt is a
token prefix of the trained text, which tokens are trained, and whether
generation_config.json stops at the template's end-of-turn tokens.
"""

import json
import sys
from pathlib import Path

from xft.data.conversation import check_conversation, check_rendered
from xft.data.encode import labels_from_spans
from xft.data.formats.chat import openai
from xft.data.json_lines import json_lines
from xft.data.questionable import check_strings
from xft.data.templates import TEMPLATES, get_template
from xft.errors import DataError, RecordError
from xft.paths import TOKENIZER_FILES, check_local, resolve_path


def list_templates(out=sys.stdout):
    width = max(len(name) for name in TEMPLATES)
    for name in sorted(TEMPLATES):
        print(f"{name:<{width}}  {TEMPLATES[name].description}", file=out)


def load_tokenizer(path):
    """The tokenizer at `path`, loaded as training loads it (xft.model.build)."""
    from xft.config.schema import TokenizerCfg
    from xft.model.build import build_tokenizer

    check_local(path, "tokenizer directory", "--tokenizer", need=TOKENIZER_FILES)
    return build_tokenizer(TokenizerCfg(path=path), path)


def encode_messages(messages, template, tokenizer):
    """{'text', 'input_ids', 'labels'} for one conversation."""
    return encode_rendering(template.render(messages), tokenizer)


def encode_rendering(rendered, tokenizer):
    """{'text', 'input_ids', 'labels'} of a rendered conversation (templates.Rendered)."""
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    labels = labels_from_spans(enc["input_ids"], enc["offset_mapping"], rendered.loss_spans)
    return {"text": rendered.text, "input_ids": enc["input_ids"], "labels": labels}


def _messages(record):
    """A `--input` line of `template check`, read as the `openai` format reads records."""
    if not isinstance(record, dict):
        raise RecordError(f"line must be a JSON object, got {type(record).__name__}")
    check_strings(record)  # a lone surrogate names its field here, not in the tokenizer
    messages = openai(record)
    check_conversation(messages)
    return messages


def render_args(args):
    """`xft template render` from its parsed arguments; returns the number of samples."""
    from xft.tools.data_args import dataset_entry

    source = dataset_entry(args.input, args, "--input", "openai")  # before the tokenizer
    return render_file(args.template, args.tokenizer, source, args.output, args.train_on,
                       args.system)


def render_file(template_name, tokenizer_path, source, output_path=None, train_on="all",
                system=None):
    """Encode every record of `source` (a DatasetCfg) with the training pipeline's map
    step and the SFT objective's prepare (render + checks); returns the number written."""
    from xft.config.schema import DataCfg
    from xft.data.pipeline import SourceReport, map_records, read_records
    from xft.objectives.sft import SFT

    tokenizer = load_tokenizer(tokenizer_path)
    template = get_template(template_name, tokenizer, train_on)
    records = read_records(source.path)
    if source.max_samples is not None:
        records = records[:source.max_samples]
    objective = SFT()
    prepared, _ = map_records(records, source, DataCfg(),
                              lambda mapped: objective.prepare(mapped, template, system),
                              SourceReport(path=source.path))
    lines = []
    for item in prepared:
        if isinstance(item, str):  # a pretraining document: BOS + text + EOS, as trained
            samples, _ = objective.encode([item], tokenizer, sys.maxsize, "drop")
            result = {"text": item, **samples[0]}
        else:
            result = encode_rendering(item, tokenizer)
        lines.append(json.dumps(result, ensure_ascii=False))
    text = "".join(line + "\n" for line in lines)
    if output_path is None:
        sys.stdout.write(text)
    else:
        Path(output_path).write_text(text, encoding="utf-8")
    return len(lines)


# Conversations `xft template check` renders when no --input is given.
SAMPLE_CHATS = {
    "single": [{"role": "user", "content": "Who are you?"},
               {"role": "assistant", "content": "I am Tuna."}],
    "system": [{"role": "system", "content": "You are Tuna, a terse assistant."},
               {"role": "user", "content": "Name a fish."},
               {"role": "assistant", "content": "Tuna."}],
    "multi_turn": [{"role": "system", "content": "You are Tuna, a terse assistant."},
                   {"role": "user", "content": "你是谁?"},
                   {"role": "assistant", "content": "我是Tuna。"},
                   {"role": "user", "content": "And who made you?"},
                   {"role": "assistant", "content": "The xft team."}],
    "reasoning": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4.", "reasoning_content": "2 plus 2 is 4."},
                  {"role": "user", "content": "And 3+3?"},
                  {"role": "assistant", "content": "6.", "reasoning_content": "3 plus 3 is 6."}],
}


def check_template(model_dir, template_name=None, input_path=None, out=None):
    """Compare xft's rendering with the tokenizer's own chat_template; returns the number
    of problems found (text or ids that differ, a prompt that is not a token prefix of the
    trained text, an end-of-turn token that generation_config.json does not stop at)."""
    from xft.data.templates.auto import hf_chat
    from xft.data.templates.stops import turn_end_ids
    from xft.engine.export import read_meta

    out = out or sys.stdout
    if input_path is not None and not Path(input_path).is_file():
        raise DataError("file not found", file=input_path)
    tokenizer = load_tokenizer(model_dir)
    name = template_name or read_meta(resolve_path(model_dir)).get("template") or "auto"
    template = get_template(name, tokenizer)
    reference = getattr(tokenizer, "chat_template", None)
    print(f"template: {name}; reference: "
          + ("the tokenizer's own chat_template" if reference else "none (the tokenizer has "
             "no chat_template: only the trained tokens and stops are checked)"), file=out)
    chats = SAMPLE_CHATS.items() if input_path is None else (
        (where, _messages(record)) for where, record in json_lines(input_path))
    problems = 0
    for key, messages in chats:
        problems += _check_chat(key, messages, template, tokenizer, reference, hf_chat, out)
    problems += _check_stops(model_dir, turn_end_ids(template, tokenizer), tokenizer, out)
    print(f"{problems} problem(s)", file=out)
    return problems


def _check_chat(key, messages, template, tokenizer, reference, hf_chat, out):
    try:
        rendered = encode_messages(messages, template, tokenizer)
        check_rendered(messages, lambda m: template.render(m).text, template.name,
                       rendered["text"])
        prompt = template.render(messages[:-1], add_generation_prompt=True).text
    except RecordError as e:  # what training would refuse too
        print(f"[{key}] refused, as training would refuse it: {e.reason} ({e.field})",
              file=out)
        return 0
    problems, notes = 0, []
    if reference:
        chat, tools = hf_chat(messages)
        try:
            official = tokenizer.apply_chat_template(chat, tools=tools, tokenize=False)
        except Exception as e:  # the official template refuses this conversation
            notes.append(f"the official template refuses it ({e})")
            official = None
        if official is not None and official != rendered["text"]:
            at = next((i for i, (a, b) in enumerate(zip(official, rendered["text"])) if a != b),
                      min(len(official), len(rendered["text"])))
            notes.append(f"TEXT DIFFERS at character {at}: xft {rendered['text'][at:at + 40]!r}"
                         f", official {official[at:at + 40]!r}")
            problems += 1
        elif official is not None:
            ids = tokenizer(official, add_special_tokens=False)["input_ids"]
            same = ids == rendered["input_ids"]
            notes.append("text and ids equal the official template" if same
                         else "text equal, IDS DIFFER")
            problems += not same
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if rendered["input_ids"][:len(prompt_ids)] != prompt_ids:
        notes.append("the GENERATION PROMPT IS NOT A TOKEN PREFIX of the trained text")
        problems += 1
    print(f"[{key}] " + "; ".join(notes), file=out)
    for run in _trained_runs(tokenizer, rendered):
        print(f"    trained: {run!r}", file=out)
    return problems


def _trained_runs(tokenizer, rendered):
    runs, run = [], []
    for token, label in zip(rendered["input_ids"], rendered["labels"]):
        if label != -100:
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run))
            run = []
    return runs + ([tokenizer.decode(run)] if run else [])


def _check_stops(model_dir, stop_ids, tokenizer, out):
    from transformers import GenerationConfig

    names = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)} ({i})" for i in stop_ids)
    print(f"end of turn: {names or 'no special token'}", file=out)
    folder = Path(resolve_path(model_dir))
    if not (folder / "generation_config.json").is_file():
        print("generation_config.json: none here (stock generate() stops only at the model "
              "config's eos_token_id)", file=out)
        return 0
    eos = GenerationConfig.from_pretrained(str(folder)).eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    missing = [i for i in stop_ids if i not in eos]
    print(f"generation_config.json eos_token_id: {eos}: "
          + (f"DOES NOT STOP at {missing}: stock generate() runs past the end of the answer"
             if missing else "stops at the end of a turn"), file=out)
    return int(bool(missing))
