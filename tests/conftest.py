import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_CONFIG = "tiny_llama_lora_self_cognition"

# Under pytest-xdist (`-n N`), each worker and the processes its tests start get an equal
# share of the cores as their torch/OpenMP threads: N workers each running one thread per
# core would oversubscribe the machine, where OpenMP's spinning threads slow everything
# several times over. Set before any test imports torch; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1)
                                            // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def run_cli(*args, cwd=None, check=True):
    """Run `python -m xft ARGS` in a subprocess, as a user would run the command."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "xft", *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"xft {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def write_config(directory, text, name="cfg.py"):
    path = Path(directory) / name
    path.write_text(text, encoding="utf-8")
    return path


def successor_model(vocab_size, successors, eos_id):
    """A tiny Llama whose greedy next token depends only on the current one: `successors`
    maps a token id to the id it is followed by (a scripted reply, with real generate())."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=2 * ((len(successors) + 1) // 2),
                         intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                         num_key_value_heads=1, tie_word_embeddings=False,
                         eos_token_id=eos_id, bos_token_id=None, pad_token_id=eos_id,
                         use_cache=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)  # residual stream = the current token's embedding
        for direction, (token, following) in enumerate(successors.items()):
            model.model.embed_tokens.weight[token, direction] = 1.0
            model.lm_head.weight[following, direction] = 10.0
    model.generation_config.eos_token_id = eos_id
    return model


# Special tokens of each template family, for `family_tokenizer`.
FAMILY_TOKENS = {
    "default": ("<s>", "</s>", []),
    "alpaca": ("<s>", "</s>", []),
    "chatml": (None, "<|im_end|>", ["<|im_start|>"]),
    "qwen2_chat": (None, "<|endoftext|>", ["<|im_start|>", "<|im_end|>"]),
    "qwen3": (None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"]),
    "qwen3_keep_thinking": (None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"]),
    "yi_chat": ("<|startoftext|>", "<|im_end|>", ["<|im_start|>"]),
    "internlm2_chat": ("<s>", "</s>", ["<|im_start|>", "<|im_end|>"]),
    "vicuna": ("<s>", "</s>", []),
    "llama2_chat": ("<s>", "</s>", []),
    "llama3_chat": ("<|begin_of_text|>", "<|end_of_text|>",
                    ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "llama3_1": ("<|begin_of_text|>", "<|eot_id|>",
                 ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]),
    "mistral": ("<s>", "</s>", []),
    "mistral_v7": ("<s>", "</s>", ["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                                   "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]",
                                   "[CALL_ID]", "[ARGS]", "[TOOL_RESULTS]", "[TOOL_CONTENT]",
                                   "[/TOOL_RESULTS]"]),
    "gemma": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "gemma3": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "phi4": ("<|endoftext|>", "<|im_end|>", ["<|im_start|>", "<|im_sep|>"]),
    "phi3": ("<s>", "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "deepseek_chat": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", []),
    "deepseek_r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                    ["<｜User｜>", "<｜Assistant｜>"]),
    "zephyr": ("<s>", "</s>", []),
    "chatglm3": (None, "</s>", ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>",
                                "<|observation|>"]),
    "glm4": (None, "<|endoftext|>", ["[gMASK]", "<sop>", "<|system|>", "<|user|>",
                                     "<|assistant|>", "<|observation|>"]),
    "moss": ("<s>", "</s>", ["<|Human|>", "<|Inner Thoughts|>", "<|Commands|>", "<|Results|>",
                             "<|MOSS|>", "<eoh>", "<eot>", "<eoc>", "<eor>", "<eom>"]),
}


@lru_cache(maxsize=None)
def family_tokenizer(name):
    """The tiny tokenizer with the BOS/EOS and special tokens of a template family."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from xft.paths import resolve_path

    bos, eos, extra = FAMILY_TOKENS[name]
    backend = Tokenizer.from_file(str(Path(resolve_path("xft://tiny-llama")) / "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                        additional_special_tokens=extra)
    tokenizer.pad_token = tokenizer.eos_token  # the aliasing that masks EOS in other toolkits
    return tokenizer


def read_metrics(work_dir):
    """The records of a run's metrics.jsonl (the file must exist)."""
    path = Path(work_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def build_dataset(experiment, tokenizer, template, log=print):
    """(training dataset, DataReport) of `experiment` as the one build step encodes it
    (xft.build.build_data, the config's objective), with the given bound template."""
    from xft.build import build_data
    from xft.objectives import build_objective

    objective = build_objective(experiment.objective, experiment.train)
    dataset, _, report = build_data(experiment, tokenizer, template, objective, log)
    return dataset, report


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded tiny-llama tokenizer (chatml)."""
    from transformers import AutoTokenizer

    from xft.paths import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the dataset cache of every test (and CLI subprocess) out of the user's ~/.cache."""
    root = tmp_path_factory.mktemp("xft-cache")
    previous = os.environ.get("XFT_CACHE_DIR")
    os.environ["XFT_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        del os.environ["XFT_CACHE_DIR"]
    else:
        os.environ["XFT_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: trains a model or takes more than ~3 s; "
                                       "`-m 'not slow'` gives the fast suite")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_tiny_reward_model(directory, seed=0):
    """A reward model directory as the preference stage exports one: the embedded tiny
    Llama's backbone with a fresh one-label sequence-classification head, saved with
    its tokenizer (and chat template). Returns the directory."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tiny = REPO / "xft" / "assets" / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = AutoConfig.from_pretrained(tiny, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(tiny, config=config,
                                                               dtype=torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
