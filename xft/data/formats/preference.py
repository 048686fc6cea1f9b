"""Map functions for preference data: raw record → PreferencePair or LabeledReply.

Paired formats (DPO, IPO, SimPO, ORPO, reward models):

sharegpt_pairs  LLaMA-Factory's: {"conversations": [{"from": "human", "value": ...}, ...],
                "chosen": {"from": "gpt", "value": ...}, "rejected": {...}, "system"?, "tools"?}
trl_pairs       TRL's: {"prompt": ..., "chosen": ..., "rejected": ...}, each a string (a user
                message / an assistant reply) or a list of {"role", "content"} messages; without
                "prompt" the prompt is implicit: chosen and rejected are whole conversations
                and their common leading messages are the prompt
alpaca_pairs    {"instruction", "input"?, "chosen", "rejected", "system"?, "history"?}

Unpaired (KTO):

kto             {"messages": [..., {"role": "assistant", ...}], "label": true|false}, or TRL's
                {"prompt": ..., "completion": ..., "label": ...} (strings or message lists)

Strings are rendered with the chat template like any message: TRL's raw-text (no template)
form is not a separate mode in xft.
"""

import difflib

from xft.data.formats import fields
from xft.data.formats.chat import alpaca_prompt, openai, sharegpt
from xft.data.preference import LabeledReply, PreferencePair, check_labeled, check_pair
from xft.errors import ConfigError, RecordError


def sharegpt_pairs(record):
    """LLaMA-Factory's pairwise ShareGPT records (e.g. dpo_en_demo.json)."""
    prompt = sharegpt({key: record[key] for key in ("conversations", "system", "tools")
                       if key in record})
    return PreferencePair(prompt, _sharegpt_reply(record, "chosen"),
                          _sharegpt_reply(record, "rejected"))


def _sharegpt_reply(record, side):
    value = record.get(side)
    if side not in record:
        raise fields.missing_field(record, side)
    if isinstance(value, list):  # a one-turn list is accepted as well as the turn itself
        if len(value) != 1:
            raise RecordError(f"must be one reply turn, got a list of {len(value)}", field=side)
        value = value[0]
    if isinstance(value, str):
        value = {"from": "gpt", "value": value}
    fields.obj(value, side)
    return _renamed(lambda: sharegpt({"conversations": [value]})[0], "conversations[0]", side)


def trl_pairs(record):
    """TRL's preference records, explicit or implicit prompt, strings or message lists."""
    for side in ("chosen", "rejected"):
        if side not in record:
            raise fields.missing_field(record, side)
    if "prompt" in record:
        prompt = _prompt(record, "prompt")
        return PreferencePair(prompt, _reply(record, "chosen"), _reply(record, "rejected"))
    chosen, rejected = (_messages(record, side) for side in ("chosen", "rejected"))
    common = 0  # the longest common run of leading messages, short of the last
    while common < min(len(chosen), len(rejected)) - 1 and chosen[common] == rejected[common]:
        common += 1
    if not len(chosen) == len(rejected) == common + 1:
        raise RecordError("without a 'prompt', chosen and rejected must be the same conversation "
                          "up to one final reply each", field="rejected")
    return PreferencePair(chosen[:common], chosen[-1], rejected[-1])


def alpaca_pairs(record):
    """Alpaca-style preference records: the alpaca prompt fields plus chosen / rejected texts."""
    prompt = alpaca_prompt(record)
    replies = [{"role": "assistant", "content": fields.text(record, side), "loss": None}
               for side in ("chosen", "rejected")]
    return PreferencePair(prompt, *replies)


def kto(record):
    """Unpaired records with a desirable / undesirable label (KTO)."""
    if "label" not in record:
        raise fields.missing_field(record, "label")
    label = record["label"]
    if not isinstance(label, bool):
        raise RecordError(f"must be true or false, got {label!r}", field="label")
    if "messages" in record:
        messages = openai(record)
        return LabeledReply(messages[:-1], messages[-1], label)
    return LabeledReply(_prompt(record, "prompt"), _reply(record, "completion"), label)


def _prompt(record, name):
    """A prompt field: a string (one user message) or a list of messages."""
    if isinstance(record.get(name), str):
        return [{"role": "user", "content": fields.text(record, name), "loss": None}]
    return _messages(record, name)


def _reply(record, name):
    """A reply field: a string, or a list of exactly one assistant message."""
    if isinstance(record.get(name), str):
        return {"role": "assistant", "content": fields.text(record, name), "loss": None}
    messages = _messages(record, name)
    if len(messages) != 1:
        raise RecordError(f"must be one assistant message, got {len(messages)} messages",
                          field=name)
    return messages[0]


def _messages(record, name):
    if name not in record:
        raise fields.missing_field(record, name)
    value = record[name]
    if isinstance(value, str):
        raise RecordError("must be a list of messages here (an implicit prompt is found by "
                          "comparing messages, not text)", field=name)
    return _renamed(lambda: openai({"messages": fields.items(record, name)}), "messages", name)


def _renamed(build, inner, outer):
    """Run `build`, reporting a RecordError on `inner...` as one on `outer...`."""
    try:
        return build()
    except RecordError as e:
        field = e.field or ""
        if field.startswith(inner):
            field = outer + field[len(inner):]
        raise RecordError(e.reason, field=field or outer) from None


PAIR_FORMATS = {"sharegpt_pairs": sharegpt_pairs, "trl_pairs": trl_pairs,
                "alpaca_pairs": alpaca_pairs}
UNPAIRED_FORMATS = {"kto": kto}


def get_preference_format(fmt, unpaired=False):
    """The map function for a preference format name, or `fmt` itself when it is a callable."""
    if callable(fmt):
        return fmt
    known = UNPAIRED_FORMATS if unpaired else PAIR_FORMATS
    if fmt not in known:
        close = difflib.get_close_matches(str(fmt), list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        kind = "unpaired preference" if unpaired else "preference pair"
        raise ConfigError(f"unknown {kind} format '{fmt}'{hint} (known: "
                          f"{', '.join(sorted(known))}, or a function record → "
                          f"{'LabeledReply' if unpaired else 'PreferencePair'})")
    return known[fmt]


def to_pair(fmt, record):
    """Map a record with the named (or given) paired format and check the result."""
    if not isinstance(record, dict):
        raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
    return check_pair(get_preference_format(fmt)(record))


def to_labeled(fmt, record):
    """Map a record with the named (or given) unpaired format and check the result."""
    if not isinstance(record, dict):
        raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
    return check_labeled(get_preference_format(fmt, unpaired=True)(record))
