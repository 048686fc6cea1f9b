"""The tools build prompts exactly as training renders them, on templates beyond chatml.

For `xft chat` (ChatSession on a model folder that recorded its template), `xft eval`
(answer_prompts) and `xft convert pth_to_hf` (the exported tokenizer's chat template),
the prompt a tool generates an answer from must equal training's token ids of the same
conversation up to the first trained token of that answer: what the model learned to
continue. The reference is xft's training encoding (encode_conversations), itself checked
against official templates in test_templates*.py.
"""

import json

import pytest
from conftest import REPO, run_cli, write_config
from serving import export_word_model
from test_chat import PromptIds

from xft.data.encode import encode_conversations
from xft.data.templates import get_template

TEMPLATES = ["llama2_chat", "alpaca", "auto"]
SYSTEM = "Be brief."
TINY_CONFIG = REPO / "configs" / "tiny" / "tiny_llama_lora_self_cognition.py"


def training_prompt(template, tokenizer, messages):
    """Training's ids of `messages` + a final assistant answer, up to that answer's first
    trained token."""
    conversation = messages + [{"role": "assistant", "content": "Fine."}]
    (sample,), _ = encode_conversations([conversation], template, tokenizer, 4096)
    labels = list(sample["labels"])
    start = max(i for i, label in enumerate(labels) if label != -100)
    while labels[start - 1] != -100:  # back to the start of that last trained run
        start -= 1
    return list(sample["input_ids"][:start])


@pytest.fixture(scope="module", params=TEMPLATES)
def chat_model(request, tmp_path_factory):
    from xft.tools.chat import load_chat_model

    folder = export_word_model(tmp_path_factory.mktemp(request.param) / "model", request.param)
    model, tokenizer, template = load_chat_model(str(folder))
    assert template.name == request.param  # the template recorded at export is used
    return model, tokenizer, template


@pytest.mark.slow
def test_chat_prompts_each_turn_as_training_renders_the_history(chat_model):
    from xft.inference.chat import ChatSession

    model, tokenizer, template = chat_model
    recorder = PromptIds(model)
    session = ChatSession(model, tokenizer, template, system=SYSTEM, max_new_tokens=6)
    first = session.ask("Who are you?")
    session.ask("And where?")
    recorder.handle.remove()
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Who are you?"}]
    assert recorder.prompts == [
        training_prompt(template, tokenizer, history),
        training_prompt(template, tokenizer, history + [
            {"role": "assistant", "content": first}, {"role": "user", "content": "And where?"}]),
    ]


@pytest.mark.slow
def test_eval_prompts_each_question_as_training_renders_it(chat_model):
    from xft.tools.eval import answer_prompts

    model, tokenizer, template = chat_model
    prompts = ["Name a colour.", "What is two plus two, and why?"]
    recorder = PromptIds(model)
    answer_prompts(model, tokenizer, template, prompts, system=SYSTEM, max_new_tokens=4)
    recorder.handle.remove()
    assert sorted(recorder.prompts) == sorted(
        training_prompt(template, tokenizer, [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": p}])
        for p in prompts)


@pytest.mark.slow
@pytest.mark.parametrize("name", TEMPLATES)
def test_pth_to_hf_exports_the_training_template(tmp_path, name):
    """A checkpoint trained with `name` converts to a folder whose tokenizer's own
    apply_chat_template renders prompts as training did, and which records `name`."""
    from transformers import AutoTokenizer

    from xft.paths import resolve_path

    config = write_config(tmp_path, f"_base_ = [{str(TINY_CONFIG)!r}]\n"
                                    f"template = {name!r}\n"
                                    "train = dict(max_steps=1, save_interval=1)\n")
    run_cli("train", str(config), "--work-dir", str(tmp_path / "w"))
    out = tmp_path / "hf"
    run_cli("convert", "pth_to_hf", str(config), str(tmp_path / "w" / "iter_1.pth"), str(out))
    assert json.loads((out / "xft_meta.json").read_text())["template"] == name

    exported = AutoTokenizer.from_pretrained(out)
    trained_with = get_template(name, AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama")))
    for messages in ([{"role": "user", "content": "Hi there"}],
                     [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Q1"},
                      {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]):
        assert exported.apply_chat_template(messages, add_generation_prompt=True,
                                            return_dict=False) == \
            training_prompt(trained_with, exported, messages)
