"""Rollouts: prompts rendered as `xft chat` renders them, batched generation equal to one
prompt at a time, log-probs equal to a fresh forward, seeded sampling, stop handling."""

import pytest
import torch
from conftest import REPO

from xft.data.formats import to_conversation
from xft.data.templates import get_template
from xft.errors import ConfigError, RecordError
from xft.rl.logprobs import completion_logprobs
from xft.rl.rollout import (TransformersGenerator, build_generator, prompt_from_record,
                            render_prompt)
from xft.inference.chat import ChatSession, Sampling

TINY = REPO / "xft" / "assets" / "tiny-llama"
QUESTIONS = ["What is 2+3?", "Tell me a story about a cat and a dog", "hi",
             "Who are you and what can you do for me today?"]


@pytest.fixture(scope="module")
def policy():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    return model.eval(), tokenizer, get_template("chatml", tokenizer)


def _prompts(template, tokenizer):
    return [render_prompt(template, tokenizer, [{"role": "user", "content": q}])
            for q in QUESTIONS]


def test_prompt_is_the_conversation_without_its_last_answer_or_the_prompt_field():
    record = {"instruction": "Add", "input": "2+3", "output": "5"}
    messages = prompt_from_record(record, lambda r: to_conversation("alpaca", r))
    assert [m["role"] for m in messages] == ["user"]
    assert "2+3" in messages[0]["content"] and "5" not in messages[0]["content"].replace("2+3", "")
    assert prompt_from_record({"prompt": "2+3=?", "system": "Be brief", "answer": "5"},
                              None) == [{"role": "system", "content": "Be brief"},
                                        {"role": "user", "content": "2+3=?"}]
    with pytest.raises(RecordError, match="prompt"):
        prompt_from_record({"prompt": ""}, None)


def test_prompt_ids_are_what_chat_feeds_generate(policy):
    model, tokenizer, template = policy
    session = ChatSession(model, tokenizer, template)
    messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"}]
    assert render_prompt(template, tokenizer, messages) == \
        session.prompt_ids(messages)["input_ids"][0].tolist()


def test_batched_greedy_equals_one_prompt_at_a_time_and_chat(policy):
    model, tokenizer, template = policy
    generator = TransformersGenerator(tokenizer, template, Sampling(), max_new_tokens=12)
    prompts = _prompts(template, tokenizer)
    batch = generator.generate(model, prompts, seed=0)
    session = ChatSession(model, tokenizer, template, max_new_tokens=12)
    for i, prompt in enumerate(prompts):
        alone = generator.generate(model, [prompt], seed=0)
        n = int(alone.lengths[0])
        assert int(batch.lengths[i]) == n
        assert batch.completion_ids[i, :n].tolist() == alone.completion_ids[0, :n].tolist()
        torch.testing.assert_close(batch.logprobs[i, :n], alone.logprobs[0, :n],
                                   rtol=0, atol=1e-5)
        assert batch.texts[i] == alone.texts[0] == session.answer(
            [{"role": "user", "content": QUESTIONS[i]}])
    assert (batch.logprobs[batch.completion_mask == 0] == 0).all()


def test_rollout_logprobs_equal_a_fresh_forward(policy):
    model, tokenizer, template = policy
    generator = TransformersGenerator(tokenizer, template, Sampling(temperature=0.7, top_p=0.9),
                                      max_new_tokens=10)
    rollout = generator.generate(model, _prompts(template, tokenizer), seed=3)
    with torch.no_grad():
        fresh, _ = completion_logprobs(model, rollout.prompt_ids, rollout.prompt_mask,
                                       rollout.completion_ids, rollout.completion_mask,
                                       temperature=0.7)
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(fresh[mask], rollout.logprobs[mask], rtol=0, atol=1e-5)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(policy):
    model, tokenizer, template = policy
    generator = TransformersGenerator(tokenizer, template, Sampling(temperature=1.0),
                                      max_new_tokens=16)
    prompts = _prompts(template, tokenizer)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generator.generate(model, prompts, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    again = generator.generate(model, prompts, seed=7)
    other = generator.generate(model, prompts, seed=8)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert not torch.equal(first.completion_ids, other.completion_ids)


def test_completion_ends_with_its_stop_token_and_is_masked_after(policy):
    model, tokenizer, template = policy
    # Make the end-of-turn token likely, so some rows stop before the length cap.
    generator = TransformersGenerator(tokenizer, template, Sampling(temperature=1.0),
                                      max_new_tokens=24)
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        bias = model.lm_head.weight.new_zeros(model.config.vocab_size)
        bias[stop] = 6.0
        handle = model.lm_head.register_forward_hook(lambda m, i, out: out + bias)
    try:
        rollout = generator.generate(model, _prompts(template, tokenizer) * 2, seed=1)
    finally:
        handle.remove()
    assert rollout.stopped.any()
    for row, mask, stopped, text in zip(rollout.completion_ids, rollout.completion_mask,
                                        rollout.stopped, rollout.texts):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        if stopped:
            assert int(row[n - 1]) in generator.stop_ids
            assert not any(int(t) in generator.stop_ids for t in row[:n - 1])
        else:
            assert n == 24
        assert "<|im_end|>" not in text


def test_generator_names_are_checked(policy):
    _, tokenizer, template = policy
    with pytest.raises(ConfigError, match="vllm"):
        build_generator("vllm", tokenizer, template, Sampling(), 8)
    with pytest.raises(ConfigError, match="transformers"):
        build_generator("hf", tokenizer, template, Sampling(), 8)
