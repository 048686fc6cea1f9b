"""Bad and hostile requests to `xft serve`: each gets an OpenAI-shaped JSON error with the
status OpenAI uses, and the server keeps answering; API key; loopback by default."""

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="the tests drive the server with the openai client")
import httpx  # noqa: E402
from conftest import REPO  # noqa: E402
from serving import ThreadServer, export_word_model, free_port  # noqa: E402

from xft.serve.app import ServedModel, create_app  # noqa: E402
from xft.tools.chat import load_chat_model  # noqa: E402

NAME = "word-model"
HELLO = [{"role": "user", "content": "Hello?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_word_model(tmp_path_factory.mktemp("serve-errors") / "model", "chatml",
                             max_positions=128)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_chat_model(str(model_dir))


@pytest.fixture(scope="module")
def server(loaded):
    app = create_app(ServedModel(NAME, *loaded), max_concurrency=4)
    server = ThreadServer(app)
    server.app = app
    yield server
    server.close()


def post(server, path, body=None, content=None, headers=None):
    return httpx.post(server.url + path, json=body, content=content, headers=headers,
                      timeout=60)


def assert_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def assert_still_serving(server):
    response = post(server, "/v1/chat/completions",
                    {"model": NAME, "messages": HELLO, "max_tokens": 3, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


GOOD = {"model": NAME, "messages": HELLO, "max_tokens": 3}


@pytest.mark.parametrize("body, status, code, param", [
    ({**GOOD, "model": "gpt-4"}, 404, "model_not_found", "model"),
    ({"model": NAME}, 400, "invalid_value", "messages"),
    ({**GOOD, "messages": []}, 400, "invalid_value", "messages"),
    ({**GOOD, "messages": "hello"}, 400, "invalid_value", "messages"),
    ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value",
     "messages.0.role"),
    ({**GOOD, "messages": [{"role": "user", "content": 42}]}, 400, "invalid_value", None),
    ({**GOOD, "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ({**GOOD, "temperature": 5}, 400, "invalid_value", "temperature"),
    ({**GOOD, "max_tokens": -5}, 400, "invalid_value", "max_tokens"),
    ({**GOOD, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ({**GOOD, "n": 3}, 400, None, "n"),
    ({**GOOD, "stream": "yes please"}, 400, "invalid_value", "stream"),
    ({**GOOD, "messages": [{"role": "assistant", "content": "hi"},
                           {"role": "system", "content": "late system"}]}, 400, None, None),
    ({**GOOD, "messages": [{"role": "user", "content": "word " * 200}]}, 400,
     "context_length_exceeded", "messages"),
    ({**GOOD, "max_tokens": 125}, 400, "context_length_exceeded", "messages"),
])
def test_bad_chat_requests_get_openai_errors_and_the_server_keeps_serving(server, body, status,
                                                                          code, param):
    assert_error(post(server, "/v1/chat/completions", body), status, code, param)
    assert_still_serving(server)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe garbage"])
def test_malformed_bodies_get_400(server, content):
    response = post(server, "/v1/chat/completions", content=content,
                    headers={"content-type": "application/json"})
    assert_error(response, 400)
    assert_still_serving(server)


def test_unknown_routes_and_methods_get_openai_shaped_errors(server):
    assert_error(httpx.get(server.url + "/v1/nothing-here"), 404)
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405)
    assert_error(httpx.get(server.url + "/v1/models/gpt-4"), 404, "model_not_found")


def test_the_openai_client_sees_typed_errors(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=NAME, messages=HELLO, max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="one prompt"):
        client.completions.create(model=NAME, prompt=["a", "b"])


def test_a_client_gone_mid_stream_stops_its_generation_and_the_server_goes_on(server, loaded):
    model = loaded[0]
    steps = []
    hook = model.register_forward_hook(lambda *args: steps.append(1))
    try:
        body = {**GOOD, "max_tokens": 50, "temperature": 0, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                          timeout=60) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk
            assert next(lines) == ""
            assert next(lines).startswith("data: ")  # the first token
        deadline = time.time() + 30
        while server.app.state.pending and time.time() < deadline:
            time.sleep(0.05)
        assert server.app.state.pending == 0
        time.sleep(0.5)
        assert len(steps) < 50  # stopped early, not generated to the end for nobody
    finally:
        hook.remove()
    assert_still_serving(server)


def test_requests_over_max_concurrency_get_429_then_are_served_again(loaded):
    import threading

    model = loaded[0]
    app = create_app(ServedModel(NAME, *loaded), max_concurrency=1)
    server = ThreadServer(app)
    release = threading.Event()
    hook = model.register_forward_hook(lambda *args: release.wait(60))  # hold the generation
    try:
        first = threading.Thread(target=post, args=(server, "/v1/chat/completions", GOOD))
        first.start()
        deadline = time.time() + 30
        while app.state.pending == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert_error(post(server, "/v1/chat/completions", GOOD), 429, "server_busy")
        release.set()
        first.join(60)
        hook.remove()
        assert_still_serving(server)
    finally:
        release.set()
        hook.remove()
        server.close()


def test_api_key_wrong_or_missing_gets_401(loaded):
    server = ThreadServer(create_app(ServedModel(NAME, *loaded), api_key="s3cret"))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert_error(post(server, "/v1/chat/completions", GOOD, headers=headers), 401,
                         "invalid_api_key")
        # Checked before the body is read: malformed JSON without the key is still 401.
        assert_error(post(server, "/v1/chat/completions", content=b"{",
                          headers={"content-type": "application/json"}), 401)
        assert_error(httpx.get(server.url + "/v1/models"), 401)
        for key, ok in (("wrong", False), ("s3cret", True)):
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            if ok:
                assert client.models.list().data[0].id == NAME
            else:
                with pytest.raises(openai.AuthenticationError):
                    client.models.list()
        assert httpx.get(server.url + "/health").status_code == 200  # no key needed
    finally:
        server.close()


@pytest.mark.slow
def test_xft_serve_command_binds_loopback_by_default_and_answers(model_dir):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "xft", "serve", str(model_dir), "--port", str(port),
         "--api-key", "k", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = process.stdout.readline()
        assert f"on http://127.0.0.1:{port}/v1" in banner, banner
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                               max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert time.time() < deadline and process.poll() is None
                time.sleep(0.2)
        assert models.data[0].id == "model"  # the folder's name
        answer = client.chat.completions.create(model="model", messages=HELLO, max_tokens=3,
                                                temperature=0)
        assert answer.choices[0].message.content
        bound = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout \
            if _has("ss") else f"127.0.0.1:{port}"
        assert f"127.0.0.1:{port}" in bound and f"0.0.0.0:{port}" not in bound
    finally:
        process.terminate()
        process.wait(timeout=30)


def _has(command):
    import shutil

    return shutil.which(command) is not None
