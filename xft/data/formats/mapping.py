"""Declarative field mapping: read a named format from records with other column and tag
names, without writing a map function.

A dataset entry may give `columns` (the format's field → the record's field) and `tags`
(a role → the value the record uses for it):

    dict(path='sft.jsonl', format='openai',
         columns=dict(messages='conversations', role='speaker', content='text'),
         tags=dict(user='human', assistant='bot'))

`FieldMapping.apply` renames the record's fields to the format's own names and the role
values to the format's own roles, then the format's map function reads it as usual; errors
are translated back, so they name the record's own fields.
"""

import difflib
import re

from xft.errors import ConfigError, RecordError

# Per format: the mappable columns and the field name the map function reads for each.
# `role` and `content` are fields of each message of the `messages` list.
COLUMNS = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output",
               "system": "system", "history": "history"},
    "qa": {"question": "question", "answer": "answer"},
    "openai": {"messages": "messages", "role": "role", "content": "content", "tools": "tools"},
    "sharegpt": {"messages": "conversations", "role": "from", "content": "value",
                 "system": "system", "tools": "tools"},
    "xtuner": {"conversation": "conversation", "system": "system", "input": "input",
               "output": "output"},
    "pretrain": {"text": "text"},
    "guanaco": {"text": "text"},
}
COLUMNS["alpaca_zh"] = COLUMNS["alpaca"]
COLUMNS["oasst"] = COLUMNS["guanaco"]
COLUMNS["xtuner_pretrain"] = {"conversation": "conversation", "output": "output",
                              "text": "text"}
# Per format: the columns that are fields of each item of its list column (`messages` or
# `conversation`) rather than of the record itself.
ITEM_COLUMNS = {"openai": {"role", "content"}, "sharegpt": {"role", "content"},
                "xtuner": {"system", "input", "output"}, "xtuner_pretrain": {"output"}}
LIST_COLUMNS = {"messages", "conversation"}

# Per format: the roles a tag can map, and the value the map function expects for each.
TAGS = {
    "openai": {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool"},
    "sharegpt": {"user": "human", "assistant": "gpt", "system": "system",
                 "tool": "observation", "function_call": "function_call"},
}


def _check_keys(given, known, what, fmt):
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{what} of format '{fmt}' has no '{key}'{hint} (known: "
                              f"{', '.join(sorted(known))})")


class FieldMapping:
    """The record → format renaming for one dataset (see the module docstring)."""

    def __init__(self, fmt, columns=None, tags=None):
        columns, tags = dict(columns or {}), dict(tags or {})
        if (columns or tags) and not isinstance(fmt, str):
            raise ConfigError("'columns' and 'tags' map records onto a named format; a format "
                              "function reads the record itself")
        if columns and fmt not in COLUMNS:
            raise ConfigError(f"format '{fmt}' takes no 'columns' (formats that do: "
                              f"{', '.join(sorted(COLUMNS))})")
        if tags and fmt not in TAGS:
            raise ConfigError(f"format '{fmt}' takes no 'tags' (formats that do: "
                              f"{', '.join(sorted(TAGS))})")
        if columns:
            _check_keys(columns, COLUMNS[fmt], "'columns'", fmt)
        if tags:
            _check_keys(tags, TAGS[fmt], "'tags'", fmt)
        native, in_items = COLUMNS.get(fmt, {}), ITEM_COLUMNS.get(fmt, set())
        # record field → format field, at the top level and inside list items
        self.top = {user: native[col] for col, user in columns.items() if col not in in_items}
        self.item = {user: native[col] for col, user in columns.items() if col in in_items}
        self.lists = {native[c] for c in LIST_COLUMNS if c in native}
        self.role_field = native.get("role")
        self.roles = {user: TAGS[fmt][role] for role, user in tags.items()}
        self.back = {v: k for k, v in {**self.top, **self.item}.items()}

    def __bool__(self):
        return bool(self.top or self.item or self.roles)

    def key(self):
        """What the mapping changes, for the dataset cache key."""
        return {"top": self.top, "item": self.item, "roles": self.roles}

    def apply(self, record):
        """The record with the format's own field names and role values."""
        if not self or not isinstance(record, dict):
            return record
        out = {self.top.get(k, k): v for k, v in record.items()}
        for name in self.lists:
            if isinstance(out.get(name), list):
                out[name] = [self._item(x) for x in out[name]]
        return out

    def _item(self, item):
        if not isinstance(item, dict):
            return item
        item = {self.item.get(k, k): v for k, v in item.items()}
        role = item.get(self.role_field)
        if self.roles and isinstance(role, str) and role in self.roles:
            item[self.role_field] = self.roles[role]
        return item

    def record_error(self, error):
        """`error` with its field path in the record's own names."""
        if not self or not error.field:
            return error
        parts = re.split(r"(\[\d+\]|\.)", error.field)
        field = "".join(self.back.get(p, p) for p in parts)
        return RecordError(error.reason, field=field)
