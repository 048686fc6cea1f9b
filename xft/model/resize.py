"""Grow a model's embeddings and output head to an extended tokenizer (model.resize_vocab).

The tokenizer is the base tokenizer with tokens appended (`xft vocab merge`), so ids below
the base's size keep their rows, and rows from there on are initialised explicitly:

mean          every new row = the mean of the base tokens' rows;
subword_mean  each new token's row = the mean of the rows of the pieces the *base*
              tokenizer splits it into (a new vocabulary piece is split by the base's
              tokenization model on the piece itself; an added token, such as a special
              token, by encoding its text).

The input embeddings and, when untied, the output head are initialised the same way, each
from its own old rows. Rows the model had beyond the base tokenizer (vocabularies padded to
a multiple of 64) are initialised too when new tokens land there.
"""

from dataclasses import dataclass

import torch

from xft.errors import ConfigError
from xft.paths import resolve_path


@dataclass
class ResizeReport:
    base_size: int  # tokens of the base tokenizer
    old_rows: int  # embedding rows before
    new_rows: int  # embedding rows after (= tokens of the extended tokenizer, or old_rows)
    initialised: int  # rows given a new value
    fallback_to_mean: int  # subword_mean: tokens the base splits into nothing (mean instead)

    def line(self):
        grown = (f"{self.old_rows} → {self.new_rows} rows" if self.new_rows != self.old_rows
                 else f"{self.old_rows} rows kept")
        extra = f", {self.fallback_to_mean} empty splits got the mean" \
            if self.fallback_to_mean else ""
        return f"vocabulary: {grown}, {self.initialised} new tokens initialised{extra}"


def load_base_tokenizer(path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_path(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.resize_vocab: cannot load the base tokenizer from "
                          f"'{path}' (set model.resize_vocab.base_tokenizer): {e}") from None


def base_split(token_id, tokenizer, base):
    """Base token ids of one token of the extended tokenizer."""
    added = tokenizer.added_tokens_decoder.get(token_id)
    if added is not None:
        return base(added.content, add_special_tokens=False)["input_ids"]
    piece = tokenizer.convert_ids_to_tokens(token_id)
    return [base.convert_tokens_to_ids(t.value)
            for t in base.backend_tokenizer.model.tokenize(piece)]


def new_rows(weight, ids, init, splits):
    """Values for rows `ids` of `weight` (old rows only are read)."""
    mean = weight.mean(dim=0)
    if not ids:
        return weight[:0]
    if init == "mean":
        return mean.expand(len(ids), -1).clone()
    return torch.stack([weight[split].mean(dim=0) if split else mean for split in splits])


def resize_vocab(model, tokenizer, cfg, base_path):
    """Resize the embeddings (and head) of `model` to `tokenizer`; returns a ResizeReport."""
    base = load_base_tokenizer(cfg.base_tokenizer or base_path)
    base_size, size = len(base), len(tokenizer)
    if size < base_size:
        raise ConfigError(f"model.resize_vocab: the tokenizer has {size} tokens, fewer than "
                          f"the base tokenizer's {base_size}: it does not extend the base")
    old_rows = model.get_input_embeddings().weight.shape[0]
    if base_size > old_rows:
        raise ConfigError(f"model.resize_vocab: the base tokenizer has {base_size} tokens but "
                          f"the model only {old_rows} embedding rows; is it the model's "
                          "tokenizer? (model.resize_vocab.base_tokenizer)")
    ids = list(range(base_size, size))
    splits = [base_split(i, tokenizer, base) for i in ids] if cfg.init == "subword_mean" else None
    bad = [i for split in splits or [] for i in split if not 0 <= i < base_size]
    if bad:
        raise ConfigError(f"model.resize_vocab: the base tokenizer split a new token into "
                          f"ids outside the base vocabulary ({bad[:5]})")
    # Values computed from the old (base) rows before resizing.
    matrices = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not matrices[0]:
        matrices.append(head.weight)
    values = [new_rows(w.detach()[:base_size].float(), ids, cfg.init, splits) for w in matrices]
    if size > old_rows:
        # mean_resizing=False: the rows are set right below, from values chosen by the config.
        model.resize_token_embeddings(size, mean_resizing=False)
    targets = [model.get_input_embeddings().weight]
    if len(matrices) > 1:
        targets.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for weight, value in zip(targets, values):
            weight[base_size:size] = value.to(weight.dtype)
    fallback = sum(1 for split in splits or [] if not split)
    return ResizeReport(base_size, old_rows, max(size, old_rows), len(ids), fallback)


def check_embeddings_train(model, method):
    """After the method is applied: the resized rows must be trainable, or they stay as set."""
    frozen = [name for name, module in (("input embeddings", model.get_input_embeddings()),
                                        ("output head", model.get_output_embeddings()))
              if module is not None and not any(p.requires_grad for p in module.parameters())]
    if frozen:
        hint = {"lora": "add them to method.modules_to_save, e.g. ['embed_tokens', 'lm_head']",
                "freeze": "set method.train_head=True and add the input embeddings to "
                          "method.modules_to_save (e.g. 'embed_tokens')"}.get(method.type, "")
        raise ConfigError(f"model.resize_vocab adds tokens, but the {' and '.join(frozen)} "
                          f"would not train; {hint}")
