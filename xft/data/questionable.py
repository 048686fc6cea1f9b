"""Checks on records that are valid but probably not what the user meant.

A bad record (xft.errors.RecordError) cannot be trained at all; a questionable one
can, but likely trains something other than intended: two user turns in a row, a
conversation ending in an unanswered user turn, a `{{name}}` placeholder nobody
filled, a tool result answering no call. `data.on_questionable` decides:

- 'warn' (default): the record is trained exactly as it is (nothing is merged,
  dropped or rewritten) and counted by kind in the data report, with the first
  record where it happened;
- 'error': the run stops at the first one, naming file, record and field.

Strings no tokenizer can take (a lone UTF-16 surrogate, which JSON's "\\ud800"
escape can produce) are bad records, found here too because the same walk over a
record's strings finds them.
"""

import re
from dataclasses import dataclass

from xft.errors import RecordError

# {{name}} as xft's `placeholders` write it (xft.data.pipeline.fill_placeholders).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
SURROGATE = re.compile("[\ud800-\udfff]")

KINDS = {
    "unfilled_placeholder": "{{placeholder}} left unfilled",
    "consecutive_user_turns": "two user turns in a row",
    "consecutive_assistant_turns": "two assistant turns in a row (no tool result between)",
    "trailing_user_turn": "conversation ends in a user turn (rendered, never answered)",
    "unknown_tool_call_id": "tool result whose tool_call_id matches no earlier call",
}


@dataclass
class Finding:
    kind: str  # a key of KINDS
    field: str  # where in the record
    detail: str

    def reason(self):
        return f"{KINDS[self.kind]}: {self.detail}"


def check_strings(record):
    """RecordError for a string the tokenizer cannot encode; findings for unfilled
    placeholders. `record` is the raw record after placeholders were filled."""
    findings = []
    for where, text in _strings(record, ""):
        bad = SURROGATE.search(text)
        if bad:
            raise RecordError(f"holds a lone UTF-16 surrogate {ascii(bad.group())} at character "
                              f"{bad.start()}, which is not valid Unicode text (a broken "
                              "\\ud800-style JSON escape?)", field=where or None)
        names = PLACEHOLDER.findall(text)
        if names:
            findings.append(Finding("unfilled_placeholder", where,
                                    f"{{{{{names[0]}}}}} (set it in the dataset's "
                                    "`placeholders`)"))
    return findings


def check_turns(messages):
    """Findings for the order of a conversation's turns and its tool results."""
    findings, call_ids = [], set()
    for i, (previous, msg) in enumerate(zip([None] + messages, messages)):
        where = f"messages[{i}]"
        role = msg["role"]
        if previous is not None and role == previous["role"] and role in ("user", "assistant"):
            if role == "user" or not previous.get("tool_calls"):
                findings.append(Finding(f"consecutive_{role}_turns", where,
                                        "kept as two separate turns"))
        for call in msg.get("tool_calls") or ():
            if call.get("id") is not None:
                call_ids.add(call["id"])
        call_id = msg.get("tool_call_id")
        if role == "tool" and call_id is not None and call_id not in call_ids:
            findings.append(Finding("unknown_tool_call_id", f"{where}.tool_call_id",
                                    f"{call_id!r} (calls so far: {sorted(call_ids) or 'none'})"))
    if messages and messages[-1]["role"] == "user":
        findings.append(Finding("trailing_user_turn", f"messages[{len(messages) - 1}]",
                                "kept; it adds prompt tokens and no label"))
    return findings


def _strings(value, where):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def apply_policy(findings, index, counts, policy, path):
    """'error': DataError for the first finding. 'warn': count each finding's kind in
    `counts` (kind → {count, first_index, first_field, example}, plain data so the
    dataset cache can store it)."""
    from xft.errors import DataError

    for finding in findings:
        if policy == "error":
            raise DataError(f"questionable record: {finding.reason()} "
                            "(data.on_questionable='error')", file=path, index=index,
                            field=finding.field)
        entry = counts.setdefault(finding.kind, {"count": 0, "first_index": index,
                                                 "first_field": finding.field,
                                                 "example": finding.detail})
        entry["count"] += 1


def report_lines(counts):
    """Data report lines for `counts` (see apply_policy)."""
    if not counts:
        return
    total = sum(entry["count"] for entry in counts.values())
    yield (f"  questionable: {total} (trained as they are; data.on_questionable='error' "
           "refuses them)")
    for kind, entry in counts.items():
        yield (f"    {entry['count']} × {KINDS[kind]} (first: record {entry['first_index']}, "
               f"{entry['first_field']}: {entry['example']})")
