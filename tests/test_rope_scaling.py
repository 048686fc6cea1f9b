"""model.rope_scaling: validated in the config, written into the model's config as
transformers' rope_parameters, and changing positions as transformers defines each type."""

import pytest
import torch

from xft.config.schema import MethodCfg, ModelCfg, RopeScalingCfg, validate
from xft.errors import ConfigError
from xft.model.build import build_model, load_causal_lm

IDS = torch.tensor([[1, 17, 250, 3, 99, 400, 12, 7]])


def experiment(**rope):
    return validate(dict(model=dict(path="xft://tiny-llama", rope_scaling=rope),
                         datasets=[dict(path="xft://data/self_cognition.json")],
                         template="chatml"))


@pytest.mark.parametrize("rope, message", [
    (dict(type="ntk", factor=2.0), r"model\.rope_scaling\.type.*'ntk'"),
    (dict(type="linear", factor=1.0), r"'model\.rope_scaling\.factor' must be > 1, got 1\.0; "
                                      "a factor of 1 changes nothing"),
    (dict(type="dynamic", factor=-2.0), r"'model\.rope_scaling\.factor' must be > 1"),
    (dict(type="linear"), r"model\.rope_scaling.*factor"),
    (dict(type="linear", factor=2.0, low_freq_factor=1.0),
     r"'model\.rope_scaling\.low_freq_factor' applies to type='llama3' only"),
    (dict(type="dynamic", factor=2.0, original_max_position_embeddings=512),
     r"original_max_position_embeddings' applies to type 'yarn' or 'llama3' only"),
    (dict(type="llama3", factor=8.0, low_freq_factor=4.0, high_freq_factor=2.0),
     r"high_freq_factor' \(2\) must be above low_freq_factor \(4\)"),
    (dict(type="yarn", factor=4.0, original_max_position_embeddings=0),
     r"original_max_position_embeddings' must be >= 1"),
])
def test_bad_rope_scaling_names_the_key_and_the_allowed_values(rope, message):
    with pytest.raises(ConfigError, match=message):
        experiment(**rope)


def test_valid_rope_scaling_is_kept():
    rope = experiment(type="yarn", factor=4.0).model.rope_scaling
    assert (rope.type, rope.factor) == ("yarn", 4.0)


def logits(model, positions):
    with torch.no_grad():
        return model(input_ids=IDS, position_ids=torch.tensor([positions])).logits


@pytest.mark.slow
def test_rope_scaling_reaches_the_model_and_moves_positions_as_transformers_defines(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = load_causal_lm("xft://tiny-llama").eval()
    model = build_model(ModelCfg(path="xft://tiny-llama",
                                 rope_scaling=RopeScalingCfg("linear", 2.0)),
                        MethodCfg(type="full")).eval()
    assert model.config.rope_parameters == {"rope_theta": 10000.0, "rope_type": "linear",
                                            "factor": 2.0}
    # Linear: position p of the scaled model is position p/2 of the plain one.
    far = list(range(1000, 1016, 2))  # near the end of the 1024-token context
    torch.testing.assert_close(logits(model, far), logits(plain, [p // 2 for p in far]))
    assert (logits(model, far) - logits(plain, far)).abs().max() > 1e-3
    # The exported config.json carries it: stock transformers loads the scaled model.
    model.save_pretrained(tmp_path / "scaled")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "scaled").eval()
    torch.testing.assert_close(logits(reloaded, far), logits(model, far))


@pytest.mark.slow
def test_dynamic_scaling_changes_only_positions_beyond_the_models_context():
    plain = load_causal_lm("xft://tiny-llama").eval()
    model = load_causal_lm("xft://tiny-llama",
                           rope_scaling=RopeScalingCfg("dynamic", 4.0)).eval()
    near = list(range(100, 108))  # inside max_position_embeddings (1024): unchanged
    torch.testing.assert_close(logits(model, near), logits(plain, near))
    far = list(range(3000, 3008))  # beyond it: NTK-scaled frequencies
    assert (logits(model, far) - logits(plain, far)).abs().max() > 1e-3
    model = load_causal_lm("xft://tiny-llama", rope_scaling=RopeScalingCfg("llama3", 8.0))
    assert model.config.max_position_embeddings == 8192  # the stretched context
    assert model.config.rope_parameters["original_max_position_embeddings"] == 1024
