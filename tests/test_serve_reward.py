"""`xft serve` of a reward model: LLaMA-Factory's scoring route through the official `openai`
client, scores against the stock AutoModelForSequenceClassification on apply_chat_template's
ids (conversations) or on the text's own tokens (strings); each kind refuses the other's
routes; long rows; `load_served` tells the kinds apart."""

import httpx
import pytest
import torch

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="the tests drive the server with the openai client")

from serving import TINY, ThreadServer, export_word_model  # noqa: E402

from xft.errors import ConfigError  # noqa: E402
from xft.serve import load_served  # noqa: E402
from xft.serve.app import create_app  # noqa: E402
from xft.serve.scoring import ServedRewardModel  # noqa: E402

NAME = "rm"
CONTEXT = 64
CHOSEN = [{"role": "system", "content": "You are Tuna."},
          {"role": "user", "content": "Who are you?"},
          {"role": "assistant", "content": "I am Tuna, made by the xft team."}]
REJECTED = CHOSEN[:2] + [{"role": "assistant", "content": "No idea."}]


def export_reward_model(out):
    """A random 2-layer Llama sequence classifier (one label) on xft's tiny tokenizer,
    exported with qwen2_chat as training's reward objective exports one."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from xft.data.templates import get_template
    from xft.engine.export import export_hf

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         vocab_size=len(tokenizer), max_position_embeddings=CONTEXT,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    export_hf(LlamaForSequenceClassification(config), tokenizer,
              get_template("qwen2_chat", tokenizer), out)
    return out


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    return export_reward_model(tmp_path_factory.mktemp("serve_reward") / "rm")


@pytest.fixture(scope="module")
def client(reward_dir):
    server = ThreadServer(create_app(load_served(str(reward_dir), name=NAME)))
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    server.close()


def post(client, body, route="/score/evaluation"):
    return client.post(route, body=body, cast_to=httpx.Response)


def stock_scores(reward_dir, rows):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    with torch.no_grad():
        return [float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in rows]


def test_conversations_score_as_the_stock_model_on_apply_chat_template(client, reward_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    result = post(client, {"model": NAME, "messages": [CHOSEN, REJECTED, CHOSEN[1:]]}).json()
    rows = [tokenizer.apply_chat_template(c, tokenize=True)["input_ids"]
            for c in (CHOSEN, REJECTED, CHOSEN[1:])]
    assert result["object"] == "score.evaluation" and result["model"] == NAME
    assert result["scores"] == pytest.approx(stock_scores(reward_dir, rows), abs=1e-5)
    assert len(set(result["scores"])) == 3  # three different rows, three scores
    assert result["usage"]["prompt_tokens"] == sum(len(r) for r in rows)


def test_texts_score_as_their_own_tokens(client, reward_dir):
    """LLaMA-Factory's form: whole texts already in the model's format, nothing added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    text = tokenizer.apply_chat_template(CHOSEN, tokenize=False)
    result = post(client, {"model": NAME, "messages": [text, "plain words"]}).json()
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (text, "plain words")]
    assert result["scores"] == pytest.approx(stock_scores(reward_dir, rows), abs=1e-5)
    assert rows[0] == tokenizer.apply_chat_template(CHOSEN, tokenize=True)["input_ids"]


def test_a_long_row_is_refused_unless_max_length_keeps_its_end(client, reward_dir):
    from transformers import AutoTokenizer

    long = CHOSEN[:2] + [{"role": "assistant", "content": "Tuna " * CONTEXT}]
    with pytest.raises(openai.BadRequestError) as refused:
        post(client, {"model": NAME, "messages": [CHOSEN, long]})
    error = refused.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages[1]"
    result = post(client, {"model": NAME, "messages": [long], "max_length": 16}).json()
    ids = AutoTokenizer.from_pretrained(reward_dir).apply_chat_template(long, tokenize=True)
    assert result["scores"] == pytest.approx(
        stock_scores(reward_dir, [ids["input_ids"][-16:]]), abs=1e-5)


@pytest.mark.parametrize("body, param, says", [
    ({"messages": [CHOSEN[:2]]}, "messages[0]", "ends with the assistant reply"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [CHOSEN], "max_length": 0}, "max_length", "greater than or equal to 1"),
    ({"messages": [[{"role": "robot", "content": "x"}]]}, "messages.0", "")])
def test_bad_scoring_requests_get_400_naming_the_field(client, body, param, says):
    with pytest.raises(openai.BadRequestError) as refused:
        post(client, {"model": NAME, **body})
    error = refused.value.body
    assert error["param"].startswith(param) and says in error["message"]


def test_each_kind_refuses_the_other_s_routes(client, tmp_path):
    with pytest.raises(openai.BadRequestError, match="is a reward model.*score/evaluation"):
        client.chat.completions.create(model=NAME, messages=CHOSEN[:2])
    with pytest.raises(openai.BadRequestError, match="is a reward model"):
        client.completions.create(model=NAME, prompt="Hi")
    with pytest.raises(openai.NotFoundError):
        post(client, {"model": "other", "messages": [CHOSEN]})
    assert [m.id for m in client.models.list()] == [NAME]
    generator = load_served(str(export_word_model(tmp_path / "lm", "qwen2_chat")), name="lm")
    assert generator.kind == "generation"
    server = ThreadServer(create_app(generator))
    try:
        lm = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="needs a reward model"):
            post(lm, {"model": "lm", "messages": [CHOSEN]})
    finally:
        server.close()


def test_load_served_tells_a_reward_model_apart_and_refuses_adapter_and_bits(reward_dir):
    served = load_served(str(reward_dir))
    assert isinstance(served, ServedRewardModel) and served.name == "rm"
    assert served.template.name == "qwen2_chat"
    with pytest.raises(ConfigError, match="reward model, served whole"):
        load_served(str(reward_dir), bits=4)
