"""The OpenAI request bodies xft serves, as pydantic models (FastAPI validates them), and
the OpenAI-shaped error every failure is answered with.

Only what xft implements is accepted with meaning; a field OpenAI defines that xft
cannot honour (n > 1, logprobs, ...) is refused with a 400 rather than ignored.
Unknown fields are ignored, as OpenAI-compatible servers do.
"""

from typing import Any, Dict, List, Literal, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class APIError(Exception):
    """A failed request: `{"error": {"message", "type", "param", "code"}}` with its status."""

    def __init__(self, status, message, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code)

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self):
        return JSONResponse(self.body(), status_code=self.status)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, List[TextPart]]] = None
    tool_calls: Optional[List[Dict[str, Any]]] = None
    tool_call_id: Optional[str] = None
    name: Optional[str] = None

    def text(self):
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content

    def plain(self):
        """Role and text in xft's message form (OpenAI's 'developer' is a system message)."""
        return {"role": "system" if self.role == "developer" else self.role,
                "content": self.text() or ""}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampled(BaseModel):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default: sampling
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Optional[Union[str, List[str]]] = Field(None)
    seed: Optional[int] = None
    n: int = 1
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logprobs: Optional[Any] = None
    # vLLM's extension: also return the prompt's and the answer's token ids.
    return_token_ids: bool = False

    def stops(self):
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(Sampled):
    messages: List[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[Literal["none", "auto"], Dict[str, Any]]] = None


class CompletionRequest(Sampled):
    prompt: Union[str, List[str]]
    max_tokens: Optional[int] = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    suffix: Optional[str] = None


class ScoreRequest(BaseModel):
    """LLaMA-Factory's scoring request: conversations (ending with the reply to score) or
    whole texts already in the model's format."""

    model: str
    messages: List[Union[str, List[Message]]] = Field(min_length=1)
    max_length: Optional[int] = Field(None, ge=1)
