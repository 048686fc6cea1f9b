"""train.mixed_precision: autocast with fp32 master weights on both engines."""

import json

import pytest
import torch
from conftest import DEMO_CONFIG
from safetensors.torch import load_file

from xft.engine.train import train
from xft.errors import ConfigError

ENGINES = ["mmengine", "hf"]
OPTIONS = {"train.max_steps": 3, "train.log_interval": 1, "train.batch_size": 4}


def losses(work_dir):
    return [json.loads(line)["loss"] for line in (work_dir / "metrics.jsonl").open()]


def adapter(work_dir):
    return load_file(work_dir / "hf/adapter_model.safetensors")


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("fp32")
    train(DEMO_CONFIG, work_dir=work_dir, cfg_options=OPTIONS)
    return work_dir


def check_mixed_precision_run(work_dir, reference, tolerance):
    mixed, full = losses(work_dir), losses(reference)
    assert len(mixed) == len(full) == 3
    # Close to fp32 but not equal: the forward really ran in the lower precision.
    assert mixed != full
    for a, b in zip(mixed, full):
        assert a == pytest.approx(b, rel=tolerance)
    assert mixed[-1] < mixed[0]  # it trained
    weights, reference_weights = adapter(work_dir), adapter(reference)
    # The optimizer updated float32 master weights, close to fp32 training's. Adam's
    # sign-like steps make single elements differ by up to ~2 lr, so compare norms;
    # lora_B starts at zero, so its norm is that of the whole update.
    assert {t.dtype for t in weights.values()} == {torch.float32}
    for name, tensor in weights.items():
        expected = reference_weights[name]
        assert (tensor - expected).norm() < 0.05 * expected.norm(), name
        if "lora_B" in name:
            assert expected.norm() > 1e-2  # it moved from zero


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_bf16_autocast_trains_close_to_fp32(engine, fp32_run, tmp_path):
    train(DEMO_CONFIG, work_dir=tmp_path, engine=engine,
          cfg_options={**OPTIONS, "train.mixed_precision": "bf16"})
    check_mixed_precision_run(tmp_path, fp32_run, tolerance=1e-2)


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ENGINES)
def test_fp16_autocast_with_loss_scaling_trains_close_to_fp32(engine, fp32_run, tmp_path):
    train(DEMO_CONFIG, work_dir=tmp_path, engine=engine,
          cfg_options={**OPTIONS, "train.mixed_precision": "fp16"})
    check_mixed_precision_run(tmp_path, fp32_run, tolerance=1e-2)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_fp16_without_cuda_is_a_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"'train.mixed_precision'='fp16' needs a CUDA device"):
        train(DEMO_CONFIG, work_dir=tmp_path, cfg_options={"train.mixed_precision": "fp16"})
    assert "model:" not in capsys.readouterr().out  # failed before anything was built


@pytest.mark.slow
def test_mixed_precision_needs_float32_trainable_weights(tmp_path):
    options = {"method.type": "full", "model.dtype": "bfloat16",
               "train.mixed_precision": "bf16"}
    with pytest.raises(ConfigError, match=r"fp32 master weights.*torch.bfloat16.*"
                                          r"model.dtype='float32'"):
        train(DEMO_CONFIG, work_dir=tmp_path, cfg_options=options)


@pytest.mark.slow
def test_unknown_mixed_precision_value_gets_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'bf16'"):
        train(DEMO_CONFIG, work_dir=tmp_path, cfg_options={"train.mixed_precision": "bf61"})
