"""`xft chat`: through a pseudo-terminal as a person uses it, multi-turn prompts against the
exported tokenizer's apply_chat_template, stop strings, seeded sampling, batch mode, --bits.

The model is a small random Llama on xft's tiny tokenizer whose generation_config suppresses
every token that is not a plain word, so answers are readable text of a known length.
"""

import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import REPO
from serving import export_word_model

from xft.errors import DataError
from xft.tools.chat import (STOPPED, ChatSession, Sampling, answer_file, limit_marker,
                            load_chat_model, read_prompt_file, stop_aware_streamer)

TINY = REPO / "xft" / "assets" / "tiny-llama"
MAX_NEW = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_word_model(tmp_path_factory.mktemp("chat") / "model", "chatml")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_chat_model(str(model_dir))


class PromptIds:
    """Records the prompt ids each generate() call starts from (its first, multi-token forward)."""

    def __init__(self, model):
        self.prompts = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            self.prompts.append(ids[0].tolist())


# ------------------------------------------------------------------------ terminal

# readline switching the terminal's bracketed-paste mode on and off around each prompt:
# control, not text; `Terminal.controls` keeps them.
PASTE_MODE = re.compile(r"\x1b\[\?2004[hl]")


class Terminal:
    """A process on a pseudo-terminal that is its controlling terminal (so Ctrl-C typed
    there is SIGINT to it, as in a real one): read what it prints, type lines."""

    def __init__(self, args):
        import pty

        self.master, slave = pty.openpty()
        env = dict(os.environ, PYTHONPATH=str(REPO), TERM="dumb")
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                        close_fds=True, start_new_session=True,
                                        preexec_fn=_take_terminal)
        os.close(slave)
        self.buffer, self.controls = "", []

    def read_until(self, text, timeout=180):
        """What was printed before `text` (line ends as '\\n'); `text` itself is consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None and not self._ready(0):
                raise AssertionError(f"did not see {text!r}; got:\n{self.buffer[-2000:]}")
            if self._ready(min(left, 1.0)):
                try:
                    chunk = os.read(self.master, 4096).decode("utf-8", "replace")
                    # On the whole buffer: a sequence may arrive split over two reads.
                    buffer = self.buffer + chunk
                    self.controls += PASTE_MODE.findall(buffer)
                    self.buffer = PASTE_MODE.sub("", buffer).replace("\r\n", "\n")
                except OSError:  # the process closed the terminal
                    pass
        head, _, self.buffer = self.buffer.partition(text)
        return head

    def _ready(self, timeout):
        return bool(select.select([self.master], [], [], timeout)[0])

    def type(self, line):
        os.write(self.master, (line + "\n").encode())
        self.read_until(line + "\n")  # the terminal echoes what is typed

    def send(self, data):
        os.write(self.master, data.encode())

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


def _take_terminal():
    """In the child, a new session's leader: make stdin (the pty) its controlling terminal."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.slow
def test_interactive_chat_in_a_terminal_streams_keeps_history_resets_and_exits(model_dir,
                                                                               loaded):
    model, tokenizer, template = loaded
    reference = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW)
    first, second = reference.ask("Who are you?"), reference.ask("And where?")
    assert first and second and first != second  # history changes the answer
    terminal = Terminal([sys.executable, "-m", "xft", "chat", str(model_dir),
                         "--max-new-tokens", str(MAX_NEW)])
    try:
        assert "template chatml" in terminal.read_until("User: ")
        cut = f"\n{limit_marker(MAX_NEW)}"  # this model's answers always run to the limit
        terminal.type("Who are you?")
        terminal.read_until("Assistant: ")
        assert terminal.read_until("\nUser: ").strip("\n") == first + cut
        terminal.type("And where?")  # answered with the first turn as history
        terminal.read_until("Assistant: ")
        assert terminal.read_until("\nUser: ").strip("\n") == second + cut
        terminal.type("RESET")
        assert "(history cleared)" in terminal.read_until("User: ")
        terminal.type("And where?")  # now without history
        terminal.read_until("Assistant: ")
        fresh = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW).ask("And where?")
        assert terminal.read_until("\nUser: ").strip("\n") == fresh + cut
        assert fresh != second
        terminal.type("EXIT")
        assert terminal.process.wait(timeout=30) == 0
    finally:
        terminal.close()


@pytest.mark.slow
def test_ctrl_c_stops_an_answer_keeps_the_history_then_quits_at_the_prompt(model_dir, loaded):
    """Ctrl-C typed into the terminal mid-answer; readline editing (Left arrow, Up for the
    previous question); a pasted two-line block is one message, sent with Enter."""
    model, tokenizer, template = loaded
    limit = 120  # long enough to type Ctrl-C while the answer streams
    reference = ChatSession(model, tokenizer, template, max_new_tokens=limit)
    first, second = reference.ask("Who are you?"), reference.ask("And where?")
    interrupted = ChatSession(model, tokenizer, template, max_new_tokens=limit)
    interrupted.ask("Who are you?")
    pasted = interrupted.ask("Hi\nthere")  # what a two-line paste must be answered with
    terminal = Terminal([sys.executable, "-m", "xft", "chat", str(model_dir),
                         "--max-new-tokens", str(limit)])
    try:
        terminal.read_until("User: ")
        terminal.type("Who are you?")
        terminal.read_until("Assistant: ")
        assert terminal.read_until("\nUser: ").strip("\n") == f"{first}\n{limit_marker(limit)}"
        terminal.type("Tell me more")
        terminal.read_until("Assistant: ")
        terminal.read_until(" ")  # the answer is streaming: stop it
        terminal.send("\x03")
        stopped = terminal.read_until(STOPPED)
        assert stopped.endswith("^C\n") and terminal.process.poll() is None
        terminal.read_until("User: ")
        # Typed with a typo fixed by Left arrow; answered after the first turn only.
        terminal.send("And wher?\x1b[De\r")
        terminal.read_until("Assistant: ")
        assert terminal.read_until("\nUser: ").strip("\n") == f"{second}\n{limit_marker(limit)}"
        terminal.type("RESET")
        terminal.read_until("User: ")
        terminal.type("Who are you?")
        terminal.read_until(limit_marker(limit))
        terminal.read_until("User: ")
        # xft asked the terminal to mark pastes (Python leaves that off for its REPL) ...
        assert "\x1b[?2004h" in terminal.controls
        # ... so a paste arrives between the markers; readline keeps it in the one message.
        terminal.send("\x1b[200~Hi\nthere\n\x1b[201~")
        terminal.read_until("there")
        terminal.send("\r")
        terminal.read_until("Assistant: ")
        assert terminal.read_until("\nUser: ").strip("\n") == f"{pasted}\n{limit_marker(limit)}"
        terminal.send("\x1b[A")  # Up: the whole pasted message comes back for editing
        assert "Hi" in terminal.read_until("there")
        terminal.send("\x03")  # Ctrl-C at the prompt: a clean exit
        assert terminal.process.wait(timeout=30) == 0
        assert "Traceback" not in terminal.buffer
    finally:
        terminal.close()


@pytest.mark.slow
def test_one_prompt_marks_a_cut_answer_on_stderr_only(model_dir, capsys):
    from argparse import Namespace

    from xft.tools.chat import run_chat

    args = Namespace(model=str(model_dir), adapter=None, template=None, bits=None,
                     temperature=0.0, top_p=None, top_k=None, repetition_penalty=None,
                     seed=None, system=None, max_new_tokens=3, prompt_file=None, output=None,
                     prompt="Who are you?", multiline=False)
    run_chat(args)
    out, err = capsys.readouterr()
    model, tokenizer, template = load_chat_model(str(model_dir))
    assert out == ChatSession(model, tokenizer, template, max_new_tokens=3).ask(
        "Who are you?") + "\n"
    assert err.strip().endswith(limit_marker(3))


@pytest.mark.slow
def test_streamed_text_is_the_answer_generate_returns(loaded, capsys):
    model, tokenizer, template = loaded
    session = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW)
    streamed_answer = session.ask("Hi", streamer=stop_aware_streamer(tokenizer, []))
    assert capsys.readouterr().out == streamed_answer + "\n"


# ---------------------------------------------------------------------- multi-turn

@pytest.mark.slow
def test_each_turn_is_prompted_with_the_history_as_apply_chat_template_renders_it(loaded):
    model, tokenizer, template = loaded
    recorder = PromptIds(model)
    session = ChatSession(model, tokenizer, template, system="Be brief.", max_new_tokens=MAX_NEW)
    first = session.ask("Who are you?")
    session.ask("And where?")
    expected = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
         {"role": "assistant", "content": first}, {"role": "user", "content": "And where?"}],
    ]
    # The exported tokenizer's chat_template is the reference.
    assert recorder.prompts == [tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                              return_dict=False)
                                for chat in expected]
    session.reset()
    session.ask("And where?")
    recorder.handle.remove()
    assert recorder.prompts[-1] == tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "And where?"}],
        add_generation_prompt=True, return_dict=False)


@pytest.mark.slow
def test_template_defaults_to_the_recorded_one_then_the_tokenizers_own(model_dir):
    from xft.engine.export import read_meta

    assert read_meta(model_dir)["template"] == "chatml"
    # xft's tiny model folder has no xft_meta.json but a tokenizer chat_template.
    assert load_chat_model(str(TINY))[2].name == "auto"


# ------------------------------------------------------------------ stops, sampling

@pytest.mark.slow
def test_a_stop_string_ends_the_reply_and_is_neither_kept_nor_streamed(loaded, capsys):
    model, tokenizer, template = loaded

    def greedy(tokens):
        return ChatSession(model, tokenizer, template, max_new_tokens=tokens).ask("Who are you?")

    full = greedy(MAX_NEW)
    stop = full[len(greedy(2)):len(greedy(4))]  # the text of the 3rd and 4th tokens
    assert len(tokenizer.encode(stop, add_special_tokens=False)) > 1
    steps = []
    hook = model.register_forward_hook(lambda *args: steps.append(1))
    try:
        session = ChatSession(model, tokenizer, replace(template, stop_strings=(stop,)),
                              max_new_tokens=MAX_NEW)
        answer = session.ask("Who are you?",
                             streamer=stop_aware_streamer(tokenizer, session.stop_texts))
    finally:
        hook.remove()
    assert session.stop_strings == [stop]
    assert answer == full[:full.index(stop)]
    assert capsys.readouterr().out == answer + "\n"
    assert len(steps) == 4  # generation stopped at the stop string, not just the text cut
    assert session.messages[-1]["content"] == answer
    assert not session.hit_limit  # a stop ended it, not max_new_tokens
    plain = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW)
    assert plain.ask("Who are you?") == full and plain.hit_limit  # no stop: cut at the limit


def test_stop_aware_streamer_holds_back_what_may_start_a_stop_string(capsys):
    from transformers import AutoTokenizer

    streamer = stop_aware_streamer(AutoTokenizer.from_pretrained(TINY), ["<eom>"])
    for piece in ["Hello <", "e", "om> and more", "ignored"]:
        streamer.on_finalized_text(piece)
    streamer.on_finalized_text("", stream_end=True)
    for piece in ["a <e", "x> b <"]:  # no stop string: everything is shown
        streamer.on_finalized_text(piece)
    streamer.on_finalized_text("", stream_end=True)
    assert capsys.readouterr().out == "Hello \na <ex> b <\n"


def test_moss_stops_at_eom_as_text_or_as_a_token():
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from xft.data.templates import get_template

    plain = AutoTokenizer.from_pretrained(TINY)
    session = ChatSession(None, plain, get_template("moss", plain))
    assert session.stop_strings == ["<eom>"] and session.stop_ids == [plain.eos_token_id]
    tagged = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(TINY / "tokenizer.json")), bos_token="<s>",
        eos_token="</s>", additional_special_tokens=["<eom>"])
    session = ChatSession(None, tagged, get_template("moss", tagged))
    assert session.stop_strings == []
    assert session.stop_ids == sorted([tagged.eos_token_id,
                                       tagged.convert_tokens_to_ids("<eom>")])


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(loaded):
    model, tokenizer, template = loaded

    def sample(seed, **options):
        sampling = Sampling(temperature=1.5, seed=seed, **options)
        session = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW,
                              sampling=sampling)
        return session.ask("Who are you?")

    first = sample(1)
    assert sample(1) == first
    assert sample(2) != first
    greedy = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW).ask("Who are you?")
    assert sample(3, top_k=1) == greedy != first  # one candidate: the greedy answer
    assert sample(1, top_p=0.9, top_k=20, repetition_penalty=1.3) == \
        sample(1, top_p=0.9, top_k=20, repetition_penalty=1.3)


# ------------------------------------------------------------------------ batch mode

@pytest.mark.slow
def test_prompt_file_answers_each_line_as_a_fresh_conversation(loaded, tmp_path):
    model, tokenizer, template = loaded
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "And where?"}]
    lines = [{"prompt": "Who are you?"}, {"prompt": "Who are you?", "system": "Be brief."},
             {"messages": conversation, "id": 7}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    session = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW)
    assert answer_file(session, prompts, tmp_path / "answers.jsonl") == 3
    written = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    expected = [[{"role": "user", "content": "Who are you?"}],
                [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Who are you?"}], conversation]
    assert [{k: v for k, v in w.items() if k not in ("answer", "finish_reason")}
            for w in written] == lines
    # This model never stops by itself: every answer ran into the limit.
    assert {w["finish_reason"] for w in written} == {"length"}
    fresh = ChatSession(model, tokenizer, template, max_new_tokens=MAX_NEW)
    assert [w["answer"] for w in written] == [fresh.answer(chat) for chat in expected]
    assert written[0]["answer"] != written[1]["answer"]  # the system prompt was used


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"}\n{"question": "x"}', r"prompts.jsonl line 2, field 'prompt'"),
    ('{"prompt": "ok"}\n\n{"prompt": "x"', r"prompts.jsonl line 3: invalid JSON"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     r"prompts.jsonl line 1, field 'messages\[1\].role': the last message must be the user's"),
    ('["just a list"]', r"prompts.jsonl line 1: line must be a JSON object"),
])
def test_bad_prompt_file_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_prompt_file(path)


# ------------------------------------------------------------------------ --bits

@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 8])
def test_bits_loads_the_model_quantized_and_answers(model_dir, bits):
    import bitsandbytes as bnb

    model, tokenizer, template = load_chat_model(str(model_dir), bits=bits)
    layer = {4: bnb.nn.Linear4bit, 8: bnb.nn.Linear8bitLt}[bits]
    assert any(isinstance(m, layer) for m in model.modules())
    answer = ChatSession(model, tokenizer, template, max_new_tokens=4).ask("Who are you?")
    full_model, _, _ = load_chat_model(str(model_dir))
    # This model's first greedy tokens survive quantization.
    assert answer == ChatSession(full_model, tokenizer, template, max_new_tokens=4).ask(
        "Who are you?")
