"""A trained reward model as a reward: the text it reads is its own chat template's rendering
of prompt + completion, and its scores equal TRL's reward-model scoring (get_reward) on the
same tokens."""

import pytest
import torch
from conftest import make_tiny_reward_model

from xft.errors import ConfigError
from xft.rl.reward_model import RewardModelScorer
from xft.rl.rewards import build_rewards, score

PROMPTS = [[{"role": "user", "content": "2+3="}],
           [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi there"}],
           [{"role": "user", "content": "Tell me a story about a cat"}]]
COMPLETIONS = ["5", "Hello! How can I help?", "Once upon a time a cat sat."]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    return make_tiny_reward_model(tmp_path_factory.mktemp("rm"))


def test_scores_equal_trls_get_reward_on_the_reward_models_own_template(reward_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.utils import get_reward

    records = [{"messages": m} for m in PROMPTS]
    scorer = RewardModelScorer(str(reward_dir), batch_size=2)
    scores = scorer(COMPLETIONS, records)

    # Independently: the reward model's own chat template, its own forward (TRL's reading).
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32)
    conversations = [[*m, {"role": "assistant", "content": c}]
                     for m, c in zip(PROMPTS, COMPLETIONS)]
    rows = [tokenizer(tokenizer.apply_chat_template(c, tokenize=False),
                      add_special_tokens=False)["input_ids"] for c in conversations]
    assert scorer.scorer.encode([r["messages"] for r in records], COMPLETIONS) == rows
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    assert all(pad not in r for r in rows)
    query_responses = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    with torch.no_grad():
        _, expected, _ = get_reward(model, query_responses, pad, context_length=0)
    torch.testing.assert_close(torch.tensor(scores), expected, rtol=0, atol=1e-5)
    assert len(set(scores)) == 3


def test_a_reward_model_combines_with_reward_functions(reward_dir):
    rewards = build_rewards([dict(type="reward_model", path=str(reward_dir), weight=0.5),
                             dict(type="format", pattern=r"\d+")])
    assert [r.name for r in rewards] == ["reward_model", "format"]
    records = [{"messages": m} for m in PROMPTS]
    total, per_function = score(rewards, [""] * 3, COMPLETIONS, records)
    model_scores = RewardModelScorer(str(reward_dir))(COMPLETIONS, records)
    torch.testing.assert_close(per_function[:, 0], torch.tensor(model_scores))
    torch.testing.assert_close(total, 0.5 * torch.tensor(model_scores)
                               + torch.tensor([1.0, 0.0, 0.0]))


def test_bad_reward_model_configs_fail_clearly(tmp_path, reward_dir):
    with pytest.raises(ConfigError, match="reward model directory not found"):
        build_rewards([dict(type="reward_model", path=str(tmp_path / "missing"))])
    with pytest.raises(ConfigError, match="batch_size"):
        build_rewards([dict(type="reward_model", path=str(reward_dir), batch_size=0)])
    with pytest.raises(ConfigError, match="reward_model.*unexpected keyword"):
        build_rewards([dict(type="reward_model", path=str(reward_dir), temprature=1)])
