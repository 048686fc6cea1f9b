"""Generation for the server: one request at a time, streamed as text deltas.

Requests are queued, not batched: a single worker thread runs `model.generate`
for one request after another, in arrival order. Why not batch: transformers'
`generate` has no continuous batching (a batch starts and ends together, so a
short answer waits for the longest), left-padded batches can flip near-ties
against the same prompt run alone, and a request's `seed` could not make its
own sampling reproducible while it shares the random stream with others. One
at a time, every answer equals what `xft chat` gives for the same conversation
and settings. A deployment that needs throughput exports the model (plain HF
artifact) to vLLM or TGI.

The worker hands each new token id to the event loop; the async side decodes
the text so far, cuts it at the first stop text, and holds back an unfinished
UTF-8 character or a possible stop-text prefix until the next token decides.
A cancelled stream (client gone) stops the generation at its next token.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, set_seed
from transformers.generation.streamers import BaseStreamer

from xft.inference.chat import Sampling, cut_at_stop, stop_prefix_length

_DONE = object()


@dataclass
class GenerationRequest:
    input_ids: List[int]
    max_tokens: int
    sampling: Sampling
    stop_ids: List[int]  # single tokens that end the answer (EOS, template stop words)
    stop_texts: List[str]  # texts that end the answer; cut with what follows
    stop_strings: List[str] = field(default_factory=list)  # of those, the multi-token ones


@dataclass
class Finished:
    """The end of one generation."""

    text: str  # the answer, stop texts cut
    raw_text: str  # the same with special tokens kept (tool-call markers may be special)
    finish_reason: str  # 'stop' | 'length'
    completion_tokens: int


class Generator:
    """Runs generation requests for one model, one at a time in arrival order."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xft-generate")

    async def stream(self, request: GenerationRequest):
        """Yield text deltas (str), then one `Finished`."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        cancel = threading.Event()

        def push(item):
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self.executor.submit(self._run, request, push, cancel)
        ids, sent, reason = [], "", None
        try:
            while reason is None:
                item = await queue.get()
                if item is _DONE:
                    reason = "length"
                elif isinstance(item, BaseException):
                    raise item
                else:
                    ids.extend(item)
                    if any(token in request.stop_ids for token in item):
                        reason = "stop"
                text, hit = self._text(ids, request, skip_special_tokens=True)
                if hit:
                    reason = "stop"
                shown = text if reason else _settled(text, request.stop_texts)
                if shown.startswith(sent) and len(shown) > len(sent):
                    yield shown[len(sent):]
                    sent = shown
            raw, _ = self._text(ids, request, skip_special_tokens=False)
            yield Finished(sent, raw, reason, len(ids))
        finally:
            cancel.set()  # a stop text found, or the client gone: the worker stops too

    def _text(self, ids, request, skip_special_tokens):
        end = next((i for i, token in enumerate(ids) if token in request.stop_ids), len(ids))
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=skip_special_tokens)
        return cut_at_stop(text, request.stop_texts)

    @torch.no_grad()
    def _run(self, request, push, cancel):
        """In the worker thread: generate, pushing each new token's id."""
        if cancel.is_set():  # cancelled while queued
            push(_DONE)
            return
        try:
            if request.sampling.seed is not None:
                set_seed(request.sampling.seed)
            extra = {"stop_strings": request.stop_strings, "tokenizer": self.tokenizer} \
                if request.stop_strings else {}
            input_ids = torch.tensor([request.input_ids], device=self.model.device)
            pad_id = self.tokenizer.pad_token_id
            self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=request.max_tokens, eos_token_id=request.stop_ids,
                pad_token_id=pad_id if pad_id is not None else request.stop_ids[0],
                streamer=_PushStreamer(push),
                stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                **request.sampling.generate_kwargs(), **extra)
            push(_DONE)
        except BaseException as e:  # reported to the request; the worker keeps serving
            push(e)


def _settled(text, stop_texts):
    """The part of a growing answer that later tokens cannot change: without an unfinished
    UTF-8 character at the end or an end that may begin a stop text."""
    text = text.rstrip("\ufffd")
    return text[:len(text) - stop_prefix_length(text, stop_texts)]


class _PushStreamer(BaseStreamer):
    """A transformers streamer (put/end) that hands on the ids of each generated token.

    generate() first puts the prompt, which is skipped."""

    def __init__(self, push):
        self.push, self.prompt_seen = push, False

    def put(self, value):
        if self.prompt_seen:
            self.push(value.reshape(-1).tolist())
        self.prompt_seen = True

    def end(self):
        pass


class _Cancelled(StoppingCriteria):
    """A stopping criterion: true once the request is cancelled."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)
