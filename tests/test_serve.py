"""`xft serve` through the official `openai` client: prompts against the exported tokenizer's
apply_chat_template, answers against `xft chat` and plain `generate`, streaming, stops, seeds,
tools, queued concurrent requests. Hostile requests: tests/test_serve_errors.py."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="the tests drive the server with the openai client")

from serving import ThreadServer, export_word_model  # noqa: E402

from xft.data.templates import get_template, template_spec  # noqa: E402
from xft.data.templates.tool_calls import TOOL_CALL_STYLES  # noqa: E402
from xft.serve.app import ServedModel, create_app  # noqa: E402
from xft.serve.tool_calls import openai_tool_calls  # noqa: E402
from xft.tools.chat import ChatSession, load_chat_model  # noqa: E402

NAME = "word-model"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_word_model(tmp_path_factory.mktemp("serve") / "model", "qwen2_chat")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_chat_model(str(model_dir))


@pytest.fixture(scope="module")
def server(loaded):
    server = ThreadServer(create_app(ServedModel(NAME, *loaded)))
    yield server
    server.close()


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat(client, messages, **options):
    return client.chat.completions.create(model=NAME, messages=messages, **options)


def streamed(client, messages, **options):
    """(text of the deltas, finish_reason, usage) of a streamed chat completion."""
    text, reason, usage = "", None, None
    for chunk in chat(client, messages, stream=True, stream_options={"include_usage": True},
                      **options):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            reason = choice.finish_reason or reason
    return text, reason, usage


CONVERSATION = [{"role": "system", "content": "You are Tuna."},
                {"role": "user", "content": "Who are you?"},
                {"role": "assistant", "content": "I am Tuna."},
                {"role": "user", "content": "What can you do?"}]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).owned_by == "xft"


@pytest.mark.parametrize("messages, tools", [
    (CONVERSATION, None),
    (CONVERSATION[1:], None),
    ([{"role": "user", "content": "Weather in Paris?"}], [WEATHER]),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": None, "tool_calls": [
          {"id": "call_1", "type": "function",
           "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}], [WEATHER]),
])
def test_prompt_ids_equal_apply_chat_template_of_the_exported_tokenizer(client, model_dir,
                                                                        messages, tools):
    from transformers import AutoTokenizer

    options = {"tools": tools} if tools else {}
    response = chat(client, messages, max_tokens=2, temperature=0,
                    extra_body={"return_token_ids": True}, **options)
    reference = AutoTokenizer.from_pretrained(model_dir).apply_chat_template(
        [hf_message(m) for m in messages], tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert response.prompt_token_ids == list(reference)
    assert response.usage.prompt_tokens == len(reference)


def hf_message(message):
    """`message` as transformers' chat templates take it: tool-call arguments as a dict
    (OpenAI sends them as JSON text)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    return dict(message, tool_calls=[
        dict(c, function=dict(c["function"], arguments=json.loads(c["function"]["arguments"])))
        for c in calls])


def test_greedy_answer_equals_xft_chat_whole_and_streamed(client, loaded):
    expected = ChatSession(*loaded, max_new_tokens=12).answer(CONVERSATION)
    assert expected.strip()
    response = chat(client, CONVERSATION, max_tokens=12, temperature=0)
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 12
    text, reason, usage = streamed(client, CONVERSATION, max_tokens=12, temperature=0)
    assert (text, reason) == (expected, "length")
    assert usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) \
        == response.usage.model_dump(include={"prompt_tokens", "completion_tokens",
                                              "total_tokens"})


def test_a_stop_string_cuts_the_answer_whole_and_streamed(client):
    full = chat(client, CONVERSATION, max_tokens=12, temperature=0).choices[0].message.content
    words = full.split()
    stop = " " + words[3]
    expected = full[:full.index(stop)]
    response = chat(client, CONVERSATION, max_tokens=12, temperature=0, stop=[stop])
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens < 12  # generation stopped, not just the text cut
    text, reason, _ = streamed(client, CONVERSATION, max_tokens=12, temperature=0, stop=stop)
    assert (text, reason) == (expected, "stop")


def test_seeded_sampling_is_reproducible_and_seeds_differ(client):
    def sample(seed):
        return chat(client, CONVERSATION, max_tokens=12, temperature=1.0, top_p=0.95,
                    seed=seed).choices[0].message.content

    first = sample(1)
    assert sample(1) == first
    assert {sample(seed) for seed in (2, 3, 4)} != {first}


def test_text_completion_equals_generate_on_the_tokenized_prompt(client, loaded):
    model, tokenizer, _ = loaded
    ids = tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    response = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=8,
                                         temperature=0)
    assert response.choices[0].text == expected
    assert response.usage.prompt_tokens == ids["input_ids"].shape[1]
    stream = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=8,
                                       temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == expected


@pytest.mark.slow
def test_concurrent_streams_are_queued_never_interleaved(client):
    questions = [f"Question number {word}?" for word in
                 ("one", "two", "three", "four", "five", "six")]
    alone = [chat(client, [{"role": "user", "content": q}], max_tokens=10,
                  temperature=0).choices[0].message.content for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(lambda q: streamed(client, [{"role": "user", "content": q}],
                                                    max_tokens=10, temperature=0)[0],
                                 questions))
    assert together == alone
    assert len(set(alone)) > 1  # different prompts, different answers: a mix-up would show


@pytest.mark.parametrize("template", ["qwen2_chat", "mistral_v3", "mistral_v7", "glm4"])
def test_tool_calls_read_back_what_the_template_renders(template):
    calls = [{"id": "abcdefghi", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
             {"id": "jklmnopqr", "type": "function",
              "function": {"name": "get_time", "arguments": {"zone": "CET", "n": [1, 2]}}}]
    message = {"role": "assistant", "content": "", "tool_calls": calls}
    spec = template_spec(template)
    text = TOOL_CALL_STYLES[spec.tool_calls].render(spec, message)
    content, parsed = openai_tool_calls(spec, text)
    assert content is None
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in parsed] == [("function", c["function"]["name"], c["function"]["arguments"])
                                 for c in calls]
    assert all(c["id"] for c in parsed)
    assert openai_tool_calls(spec, "no call here") is None
    assert openai_tool_calls(spec, text.replace("}", "", 1)) is None  # broken JSON: plain text


def test_tools_go_to_a_template_that_renders_them_and_are_refused_otherwise(client, loaded):
    response = chat(client, [{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER],
                    max_tokens=4, temperature=0)
    assert response.choices[0].finish_reason in ("length", "stop", "tool_calls")
    model, tokenizer, _ = loaded
    chatml = ThreadServer(create_app(ServedModel(NAME, model, tokenizer,
                                                 get_template("chatml", tokenizer))))
    try:
        other = openai.OpenAI(base_url=chatml.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="does not render tools"):
            chat(other, [{"role": "user", "content": "hi"}], tools=[WEATHER])
    finally:
        chatml.close()
