"""The OpenAI-compatible HTTP API of `xft serve`, as a FastAPI app.

    GET  /v1/models              the one served model
    POST /v1/chat/completions    messages → the training template → answer (SSE with stream)
    POST /v1/completions         raw text prompt → continuation (base models)
    POST /v1/score/evaluation    a reward model's scores (LLaMA-Factory's route; scoring.py)
    GET  /health                 liveness, no key needed

The chat prompt is built by the same ChatTemplate object (and ChatSession) as
training and `xft chat`, so its token ids equal `apply_chat_template` of the
exported tokenizer. Every failure is an OpenAI-shaped JSON error,
`{"error": {"message", "type", "param", "code"}}`, with the status OpenAI uses.

A server holds one model: a generative one (ServedModel) answers the completion
routes, a reward model (scoring.ServedRewardModel) the scoring route; each refuses
the other's routes with a 400 that names the right one.
"""

import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xft.errors import RecordError
from xft.serve.generation import Finished, GenerationRequest, Generator
from xft.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, ScoreRequest
from xft.serve.scoring import SCORE_ROUTE
from xft.serve.tool_calls import openai_tool_calls
from xft.inference.chat import ChatSession, Sampling

# Answer length when a chat request sets no max_tokens (OpenAI's: the rest of the
# context, which a small or undertrained model may fill with rambling).
DEFAULT_MAX_TOKENS = 512


class ServedModel:
    """A loaded model under its public name, with its template and generation queue."""

    kind = "generation"

    def __init__(self, name, model, tokenizer, template):
        self.name, self.model, self.tokenizer, self.template = name, model, tokenizer, template
        self.session = ChatSession(model, tokenizer, template)  # prompt ids and stops
        self.generator = Generator(model, tokenizer)
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        self.created = int(time.time())

    def chat_request(self, messages, max_tokens=None, sampling=None, stops=()):
        """The generation request answering `messages` (xft's form), prompted by the template."""
        try:
            prompt = self.session.prompt_ids(messages)["input_ids"][0].tolist()
        except RecordError as e:
            raise APIError(400, e.reason, param=e.field) from None
        session = self.session
        return GenerationRequest(prompt, self.max_tokens(len(prompt), max_tokens),
                                 sampling or Sampling(), session.stop_ids,
                                 [*session.stop_texts, *stops], [*session.stop_strings, *stops])

    def max_tokens(self, prompt_length, requested):
        """The answer's token budget: `requested` if the context has room (else APIError),
        by default the rest of the context up to DEFAULT_MAX_TOKENS."""
        context = self.context_length
        if context is None:
            return requested or DEFAULT_MAX_TOKENS
        room = context - prompt_length
        if room <= 0 or requested is not None and requested > room:
            asked = f" + {requested} answer tokens" if requested else ""
            raise APIError(400, f"this model's context is {context} tokens; the prompt has "
                           f"{prompt_length}{asked}", param="messages",
                           code="context_length_exceeded")
        return requested or min(DEFAULT_MAX_TOKENS, room)

    def card(self):
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "xft"}


def create_app(served, api_key=None, max_concurrency=64):
    """The app serving `served`; with `api_key`, /v1 routes need `Authorization: Bearer KEY`.

    At most `max_concurrency` requests are admitted at once (one generating, the rest
    queued in arrival order); more get 429 until one finishes."""
    app = FastAPI(title="xft serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pending = 0

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return APIError(401, "Incorrect or missing API key (Authorization: Bearer KEY)",
                                code="invalid_api_key").response()
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(request, exc):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return APIError(400, f"the request body is not valid JSON: {first['msg']}",
                            code="invalid_json").response()
        where = [str(part) for part in first["loc"] if part != "body"]
        param = ".".join(where) or None
        return APIError(400, f"{param or 'body'}: {first['msg']}", param=param,
                        code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return APIError(exc.status_code, str(exc.detail),
                        code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def server_error(request, exc):
        return APIError(500, f"{type(exc).__name__}: {exc}", type="server_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [served.card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        _check_model(served, name)
        return served.card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        _check_model(served, body.model, "generation")
        _check_supported(body)
        messages, tools_style = _conversation(body, served.template)
        request = served.chat_request(messages, body.max_completion_tokens or body.max_tokens,
                                      _sampling(body), body.stops())
        reply = _ChatReply(served, body, request, tools_style)
        return await _respond(app, max_concurrency, body, reply)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        _check_model(served, body.model, "generation")
        _check_supported(body)
        if body.echo or body.suffix is not None:
            raise APIError(400, "echo and suffix are not supported", param="echo")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "give one prompt per request", param="prompt")
        prompt = served.tokenizer(prompts[0])["input_ids"]
        stops = body.stops()
        eos = [served.tokenizer.eos_token_id] if served.tokenizer.eos_token_id is not None else []
        request = GenerationRequest(prompt, served.max_tokens(len(prompt), body.max_tokens),
                                    _sampling(body), eos, stops, stops)
        return await _respond(app, max_concurrency, body, _CompletionReply(served, body, request))

    @app.post(SCORE_ROUTE)
    async def score(body: ScoreRequest):
        _check_model(served, body.model, "reward")
        _admit(app, max_concurrency)
        try:
            return await served.respond(body)
        finally:
            app.state.pending -= 1

    return app


def _admit(app, max_concurrency):
    """Count the request in, or 429 when `max_concurrency` are in already."""
    if app.state.pending >= max_concurrency:
        raise APIError(429, f"the server is busy ({max_concurrency} requests admitted); "
                       "retry shortly", type="rate_limit_error", code="server_busy")
    app.state.pending += 1


async def _respond(app, max_concurrency, body, reply):
    """Admit the request (or 429), then answer it whole or as an SSE stream."""
    _admit(app, max_concurrency)
    if not body.stream:
        try:
            return await reply.whole()
        finally:
            app.state.pending -= 1

    async def events():
        # Server-sent events written by hand: each event is one `data:` line of JSON
        # and the stream ends with `data: [DONE]`, which is all OpenAI's format uses.
        try:
            async for chunk in reply.chunks():
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except Exception as e:  # headers are sent: report it in the stream
            error = APIError(500, f"{type(e).__name__}: {e}", type="server_error")
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:
            app.state.pending -= 1
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


class _Reply:
    """One request's answer, whole or as chunks."""

    kind = ""

    def __init__(self, served, body, request):
        self.served, self.body, self.request = served, body, request
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def finish(self):
        async for item in self.served.generator.stream(self.request):
            if isinstance(item, Finished):
                return item

    def usage(self, finished):
        prompt = len(self.request.input_ids)
        return {"prompt_tokens": prompt, "completion_tokens": finished.completion_tokens,
                "total_tokens": prompt + finished.completion_tokens}

    def envelope(self, choices, **extra):
        return {"id": self.id, "object": self.kind, "created": self.created,
                "model": self.served.name, "choices": choices, **extra}

    def token_ids(self):
        return {"prompt_token_ids": self.request.input_ids} if self.body.return_token_ids else {}

    def usage_chunk(self, finished):
        options = self.body.stream_options
        if options is not None and options.include_usage:
            return [self.envelope([], usage=self.usage(finished))]
        return []


class _ChatReply(_Reply):
    prefix, kind = "chatcmpl", "chat.completion"

    def __init__(self, served, body, request, tools_style):
        super().__init__(served, body, request)
        self.tools_style = tools_style

    def message(self, finished):
        """(assistant message, finish_reason)."""
        parsed = openai_tool_calls(self.served.template, finished.raw_text) \
            if self.tools_style else None
        if parsed is None:
            return {"role": "assistant", "content": finished.text}, finished.finish_reason
        content, calls = parsed
        return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"

    async def whole(self):
        finished = await self.finish()
        message, reason = self.message(finished)
        return self.envelope([{"index": 0, "message": message, "finish_reason": reason,
                               "logprobs": None}],
                             usage=self.usage(finished), **self.token_ids())

    def chunk(self, delta, reason=None, **extra):
        return dict(self.envelope([{"index": 0, "delta": delta, "finish_reason": reason,
                                    "logprobs": None}], **extra), object="chat.completion.chunk")

    async def chunks(self):
        yield self.chunk({"role": "assistant", "content": ""}, **self.token_ids())
        if self.tools_style:  # calls are recognised in the whole answer: sent at the end
            finished = await self.finish()
            message, reason = self.message(finished)
            if message.get("tool_calls"):
                calls = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
                yield self.chunk({"content": message["content"], "tool_calls": calls})
            elif message["content"]:
                yield self.chunk({"content": message["content"]})
        else:
            async for item in self.served.generator.stream(self.request):
                if isinstance(item, Finished):
                    finished, reason = item, item.finish_reason
                else:
                    yield self.chunk({"content": item})
        yield self.chunk({}, reason)
        for chunk in self.usage_chunk(finished):
            yield dict(chunk, object="chat.completion.chunk")


class _CompletionReply(_Reply):
    prefix, kind = "cmpl", "text_completion"

    def choice(self, text, reason):
        return {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}

    async def whole(self):
        finished = await self.finish()
        return self.envelope([self.choice(finished.text, finished.finish_reason)],
                             usage=self.usage(finished), **self.token_ids())

    async def chunks(self):
        async for item in self.served.generator.stream(self.request):
            if isinstance(item, Finished):
                yield self.envelope([self.choice("", item.finish_reason)], **self.token_ids())
                for chunk in self.usage_chunk(item):
                    yield chunk
            else:
                yield self.envelope([self.choice(item, None)])


def _check_model(served, name, kind=None):
    """The request names the served model, and (with `kind`) a route that model serves."""
    if name != served.name:
        raise APIError(404, f"the model '{name}' does not exist; this server serves "
                       f"'{served.name}'", param="model", code="model_not_found")
    if kind == "generation" and served.kind == "reward":
        raise APIError(400, f"'{name}' is a reward model: it scores replies (POST "
                       f"{SCORE_ROUTE}) and does not generate", param="model")
    if kind == "reward" and served.kind != "reward":
        raise APIError(400, f"'{name}' generates; {SCORE_ROUTE} needs a reward model "
                       "(one trained with objective 'reward')", param="model")


def _check_supported(body):
    if body.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")


def _sampling(body):
    # top_k=0: no top-k cut (OpenAI has none; transformers would default to 50).
    top_p = body.top_p if body.top_p < 1 else None
    return Sampling(temperature=body.temperature, top_p=top_p, top_k=0, seed=body.seed)


def _conversation(body, template):
    """(xft messages for the template, the tool-call style to parse answers with or None)."""
    messages = []
    for i, m in enumerate(body.messages):
        message = m.plain()
        if m.tool_calls:
            message["tool_calls"] = [_tool_call(call, f"messages[{i}].tool_calls[{j}]")
                                     for j, call in enumerate(m.tool_calls)]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        messages.append(message)
    if not body.tools or body.tool_choice == "none":
        return messages, None
    if isinstance(body.tool_choice, dict):
        raise APIError(400, "tool_choice may be 'auto' or 'none'", param="tool_choice")
    if not getattr(template, "tool_definitions", None):
        raise APIError(400, f"template '{template.name}' does not render tools",
                       param="tools")
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": None})
    messages[0]["tools"] = body.tools
    return messages, template.tool_calls


def _tool_call(call, where):
    """An OpenAI tool call (arguments as JSON text) in xft's form (arguments as a dict)."""
    from xft.data.conversation import tool_call

    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise APIError(400, "must be {'type': 'function', 'function': {...}}", param=where)
    try:
        return tool_call(function.get("name"), function.get("arguments", {}), call.get("id"),
                         where=where)
    except RecordError as e:
        raise APIError(400, e.reason, param=e.field) from None
