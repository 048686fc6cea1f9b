"""Serving a reward model: scores instead of answers.

A reward model (what `objective = dict(type='reward')` exports) is served on
LLaMA-Factory's scoring route, so clients written for its API work unchanged:

    POST /v1/score/evaluation
    {"model": "rm", "messages": [conversation or text, ...], "max_length": 1024}
    → {"id", "object": "score.evaluation", "model", "scores": [float, ...], "usage"}

A conversation (a list of messages ending with the assistant reply to score) is
rendered by the template the model was trained with, exactly as training encoded
it (xft.inference.reward.RewardScorer); a string is a whole text already in the
model's format and is tokenized as it is (LLaMA-Factory's form).
"""

import asyncio
import time
import uuid

from starlette.concurrency import run_in_threadpool

from xft.errors import XftError
from xft.serve.protocol import APIError

SCORE_ROUTE = "/v1/score/evaluation"


class ServedRewardModel:
    """A loaded reward model under its public name. Requests score one at a time (a lock),
    so two requests never share a batch's padding or the model's working memory."""

    kind = "reward"

    def __init__(self, name, scorer):
        self.name, self.scorer, self.template = name, scorer, scorer.template
        self.context_length = getattr(scorer.model.config, "max_position_embeddings", None)
        self.created = int(time.time())
        self.lock = asyncio.Lock()

    def card(self):
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "xft"}

    def rows(self, items, max_length):
        """Token ids of each item; a row longer than `max_length` keeps its last tokens,
        one longer than the model's context without `max_length` is a 400."""
        rows = []
        for i, item in enumerate(items):
            where = f"messages[{i}]"
            if isinstance(item, str):
                row = self.scorer.encode_texts([item])[0]
            else:
                if not item or item[-1].role != "assistant":
                    raise APIError(400, "a conversation to score ends with the assistant reply "
                                "it scores", param=where)
                prompt = [m.plain() for m in item[:-1]]
                try:
                    row = self.scorer.encode([prompt], [item[-1].text() or ""])[0]
                except XftError as e:
                    raise APIError(400, f"{where}: {e}", param=where) from None
            if max_length is not None:
                row = row[-max_length:]
            elif self.context_length is not None and len(row) > self.context_length:
                raise APIError(400, f"{where} has {len(row)} tokens; this model's context is "
                            f"{self.context_length} (set max_length to score its last tokens)",
                            param=where, code="context_length_exceeded")
            rows.append(row)
        return rows

    async def respond(self, body):
        rows = self.rows(body.messages, body.max_length)
        async with self.lock:
            scores = await run_in_threadpool(self.scorer.score_ids, rows)
        tokens = sum(len(row) for row in rows)
        return {"id": f"scoreeval-{uuid.uuid4().hex}", "object": "score.evaluation",
                "model": self.name, "scores": [float(s) for s in scores],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
