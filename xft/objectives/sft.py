"""Supervised fine-tuning (and pretraining documents): next-token cross-entropy on the
tokens a template marks as trained.

A format map function returns a conversation (messages) or, for pretraining, a
str document. Conversations are rendered once by the bound template and
tokenized with offsets (xft.data.encode.encode_rendered); documents get
BOS + text + EOS, every token trained (encode_documents). A sample is
{input_ids, labels}, packed rows add position_ids (xft.data.pack). The loss
is the token-loss sum over labelled positions (xft.model.loss.CausalLMLoss)
and the normaliser is the number of label tokens.
"""

import math

from xft.data.collate import PackedCollator, PadCollator
from xft.data.conversation import check_rendered, with_system
from xft.data.encode import IGNORE_INDEX, encode_documents, encode_rendered
from xft.data.pack import pack_samples
from xft.model.loss import CausalLMLoss, count_label_tokens
from xft.objectives.base import LossOutput, Objective, register_objective

ANSI_TRAINED, ANSI_RESET = "\033[1;32m", "\033[0m"


@register_objective
class SFT(Objective):
    name = "sft"
    fields = ("input_ids", "labels")
    length_field = "input_ids"
    validation_key = "eval_loss"

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        # One loss object for training and validation: they share its logits workspace.
        self.causal_lm_loss = (CausalLMLoss(train.loss_at_labels_only, train.loss_chunk_size)
                               if train is not None else CausalLMLoss())

    def prepare(self, mapped, template, system):
        if isinstance(mapped, str):
            return mapped  # a pretraining document: no template
        messages = with_system(mapped, system)
        # Rendering runs the template's own checks (e.g. no system role); then
        # nothing the record holds may be left out of the text.
        rendered = template.render(messages)
        check_rendered(messages, lambda m: template.render(m).text, template.name,
                       text=rendered.text)
        return rendered

    def encode(self, prepared, tokenizer, max_length, truncation):
        documents = [p for p in prepared if isinstance(p, str)]
        rendered = [p for p in prepared if not isinstance(p, str)]
        samples, stats = encode_rendered(rendered, tokenizer, max_length, truncation)
        if documents:
            doc_samples, doc_stats = encode_documents(documents, tokenizer, max_length)
            samples += doc_samples
            stats.merge(doc_stats, offset=len(rendered))
        # Origins index `prepared`, where documents and conversations may interleave.
        order = ([i for i, p in enumerate(prepared) if not isinstance(p, str)]
                 + [i for i, p in enumerate(prepared) if isinstance(p, str)])
        stats.origins = [order[i] for i in stats.origins]
        return samples, stats

    def pack(self, samples, max_length, seed):
        return pack_samples(samples, max_length, seed=seed)

    def collator(self, pad_token_id, packed):
        return (PackedCollator if packed else PadCollator)(pad_token_id)

    def show(self, sample, tokenizer, color=False):
        return masked_text(tokenizer, sample["input_ids"], sample["labels"], color)

    def count(self, batch):
        return count_label_tokens(batch["labels"])

    def loss(self, model, batch):
        loss_sum, label_tokens = self.causal_lm_loss(model, batch)
        return LossOutput(loss_sum, label_tokens)

    def eval_record(self, loss, count, metrics):
        return {"eval_loss": loss, "eval_ppl": perplexity(loss), "eval_label_tokens": count}


def perplexity(loss):
    """exp(loss); inf rather than an OverflowError for a hopeless model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def masked_text(tokenizer, input_ids, labels, color=False):
    """The decoded sample with trained tokens marked: ANSI green, or [[...]] without colour."""
    opening, closing = (ANSI_TRAINED, ANSI_RESET) if color else ("[[", "]]")
    pieces, run, run_trained = [], [], None
    for token, label in zip(input_ids, labels):
        trained = label != IGNORE_INDEX
        if run and trained != run_trained:
            pieces.append((run_trained, tokenizer.decode(run)))
            run = []
        run.append(token)
        run_trained = trained
    if run:
        pieces.append((run_trained, tokenizer.decode(run)))
    return "".join(f"{opening}{text}{closing}" if trained else text for trained, text in pieces)
