"""The intermediate forms of preference data: a pair of replies, or one labelled reply.

A PreferencePair is a prompt (a conversation that ends where the assistant is
to answer: system, user, earlier turns...) and two assistant replies to it, the
chosen one and the rejected one. A LabeledReply (KTO's unpaired data) is a
prompt and one reply marked desirable or not. The messages are the plain dicts
of xft.data.conversation, so the same templates render them.

Every map function of xft.data.formats.preference returns one of these, and
`check_pair` / `check_labeled` reject what cannot train: a missing or empty
reply, two identical replies, a prompt that does not end where the assistant
answers.
"""

from dataclasses import dataclass

from xft.data.conversation import check_conversation
from xft.errors import RecordError


@dataclass(frozen=True)
class PreferencePair:
    prompt: list  # messages before the reply; the last is a user (or tool) message
    chosen: dict  # an assistant message
    rejected: dict  # an assistant message


@dataclass(frozen=True)
class LabeledReply:
    prompt: list
    reply: dict  # an assistant message
    desirable: bool


def check_pair(pair):
    """Raise RecordError unless `pair` is a PreferencePair that can train."""
    if not isinstance(pair, PreferencePair):
        raise RecordError(f"a preference format must return a PreferencePair, got "
                          f"{type(pair).__name__}")
    _check_prompt_and_reply(pair.prompt, pair.chosen, "chosen")
    _check_prompt_and_reply(pair.prompt, pair.rejected, "rejected")
    if _reply_text(pair.chosen) == _reply_text(pair.rejected):
        raise RecordError("chosen and rejected replies are identical: the pair teaches nothing",
                          field="rejected")
    return pair


def check_labeled(item):
    """Raise RecordError unless `item` is a LabeledReply that can train."""
    if not isinstance(item, LabeledReply):
        raise RecordError(f"an unpaired preference format must return a LabeledReply, got "
                          f"{type(item).__name__}")
    if not isinstance(item.desirable, bool):
        raise RecordError(f"must be true or false, got {item.desirable!r}", field="label")
    _check_prompt_and_reply(item.prompt, item.reply, "completion")
    return item


def _check_prompt_and_reply(prompt, reply, side):
    if not isinstance(prompt, list) or not prompt:
        raise RecordError("the prompt is empty", field="prompt")
    if not isinstance(reply, dict) or reply.get("role") != "assistant":
        raise RecordError("must be one assistant message", field=side)
    if prompt[-1].get("role") not in ("user", "tool"):
        raise RecordError(f"the prompt must end with a user (or tool) message, not "
                          f"{prompt[-1].get('role')!r}", field="prompt")
    try:
        check_conversation(prompt + [reply])
    except RecordError as e:
        # Name the side: the reply is the last message of the checked conversation.
        last = f"messages[{len(prompt)}]"
        if e.field and e.field.startswith(last):
            raise RecordError(e.reason, field=side + e.field[len(last):]) from None
        raise RecordError(e.reason, field="prompt" + (e.field or "")[len("messages"):]) from None


def _reply_text(reply):
    return (reply.get("content"), repr(reply.get("tool_calls")), reply.get("reasoning_content"))
