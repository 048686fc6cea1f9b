"""A corpus of bad inputs and settings, each with the answer a user should get.

Every case runs `xft.cli.main([...])` in this process (a subprocess per case would
take minutes) and checks the exit code, that no traceback is printed, and that the
last line of stderr is the one-line error naming what is wrong (key, value and
allowed range; file, record and field; checkpoint, weight and why). Cases that
exit 0 (questionable data accepted with a warning, valid input that used to be
refused) check the report line on stdout instead.

Add a case when a user reports a confusing message: the table is meant to grow.
"""

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xft.cli import main

# --- the files the cases refer to ------------------------------------------------------------

ALPACA = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"}
          for i in range(4)]


def chat(*turns, **extra):
    roles = {"u": "user", "a": "assistant"}
    return {"messages": [{"role": roles[r], "content": c} for r, c in turns], **extra}


JSONL = {
    "two_users.jsonl": [chat(("u", "a"), ("u", "b"), ("a", "c"))],
    "trailing_user.jsonl": [chat(("u", "a"), ("a", "b"), ("u", "dangling"))],
    "placeholder.jsonl": [chat(("u", "who are you?"), ("a", "I am {{name}}"))],
    "unknown_call.jsonl": [{"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c9", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."}]}],
    "weight_string.jsonl": [{"messages": [{"role": "user", "content": "a"},
                                          {"role": "assistant", "content": "b",
                                           "weight": "0"}]}],
    "prompt_ok.jsonl": [{"prompt": "hi"}],
}
RAW = {
    "surrogate.jsonl": '{"messages": [{"role": "user", "content": "x \\ud800 y"}, '
                       '{"role": "assistant", "content": "b"}]}\n',
    "surrogate_prompt.jsonl": '{"prompt": "x \\ud83d"}\n',
    "surrogate.json": '[{"instruction": "a", "input": "", "output": "b \\udfff"}]',
    "broken.json": '[{"instruction": "a", "output": "b"},',
    "broken_line.jsonl": '{"messages": []}\n{"messages": [\n',
    "missing_field.json": '[{"instruction": "a", "outptu": "b"}]',
    "empty.json": "",
    "numbers.csv": "instruction,input,output\n12,,3.50\n7,x,007\n",
    "dup_header.csv": "instruction,instruction,output\na,b,c\n",
    "task.csv": "text,label\ngood,1\n,0\n",
    "task_ok.csv": "text,label\ngood,1\nbad,0\n",
    "config.yaml": "model:\n  path: xft://tiny-llama\ntemplate: chatml\ndatasets:\n"
                   "  - path: data.json\ntrain:\n  epochs: 0\n",
    "notes.txt": "not a config\n",
    "syntax_error.py": "train = dict(epochs=\n",
    "val_cfg.py": "_base_ = ['./cfg.py']\nval_datasets = [dict(path='nope.jsonl')]\n",
}


def _config(tmp):
    return f"""
model = dict(path='xft://tiny-llama')
template = 'chatml'
datasets = [dict(path='{tmp}/data.json', format='alpaca')]
data = dict(max_length=128, cache=False)
method = dict(type='lora', r=4, alpha=8, dropout=0.0)
train = dict(batch_size=2, epochs=1, save_interval=1000, log_interval=1)
work_dir = '{tmp}/wd'
"""


LORA_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A"


def _checkpoints(tmp):
    """Checkpoints that do not fit the config (4 records, batch 2: a 2-step run, r=4)."""
    import torch
    from safetensors.torch import save_file

    from xft.engine.engines import HF_COMPLETE_MARKER as COMPLETE_MARKER

    def mmengine(name, step, state):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"meta": {"iter": step}, "state_dict": state}, path)

    def trainer(name, step, weights=None):
        folder = tmp / name
        folder.mkdir(parents=True)
        if step is not None:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if weights is not None:
            save_file(weights, str(folder / "adapter_model.safetensors"))
        (folder / COMPLETE_MARKER).write_text(f"{step}\n")

    mmengine("mm_past/iter_50.pth", 50, {})
    mmengine("mm_rank/iter_1.pth", 1, {f"lm.{LORA_A}.default.weight": torch.zeros(3, 128)})
    with zipfile.ZipFile(tmp / "not_a_checkpoint.pth", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not torch.save's")
    (tmp / "json_named.pth").write_text("{}")
    trainer("hf_past/checkpoint-9", 9)
    trainer("hf_rank/checkpoint-1", 1, {f"{LORA_A}.weight": torch.zeros(3, 128)})
    trainer("hf_no_state/checkpoint-1", None)
    (tmp / "empty_wd").mkdir()
    (tmp / "not_an_adapter").mkdir()
    (tmp / "docs_only").mkdir()
    (tmp / "docs_only" / "README.md").write_text("no data here")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "data.json").write_text(json.dumps(ALPACA))
    for name, records in JSONL.items():
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, text in RAW.items():
        (tmp / name).write_text(text)
    (tmp / "cfg.py").write_text(_config(tmp))
    _checkpoints(tmp)
    return tmp


# --- the table ---------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    argv: str  # split on spaces after formatting {tmp} and {cfg}
    expect: list  # fragments of the error line (code != 0) or of stdout (code 0)
    code: int = 1
    marks: list = field(default_factory=list)


def train(options, *expect, code=1):
    return Case(f"config:{options}", f"train {{cfg}} --cfg-options {options}", list(expect), code)


def data(name, options, *expect, code=1):
    """check-dataset on {tmp}/name (format given in options)."""
    argv = (f"check-dataset {{cfg}} --samples 0 --plot {{tmp}}/plot.png --cfg-options "
            f"datasets.0.path={{tmp}}/{name} {options}")
    return Case(f"data:{name}:{options}", argv, list(expect), code)


OPENAI = "datasets.0.format=openai"
STRICT = "data.on_questionable=error"

CASES = [
    # -- numeric keys: key, value and allowed range ----------------------------------------
    train("train.epochs=0", "'train.epochs' must be >= 1, got 0"),
    train("train.grad_accum=0", "'train.grad_accum' must be >= 1, got 0"),
    train("train.save_interval=0", "'train.save_interval' must be >= 1, got 0"),
    train("train.log_interval=0", "'train.log_interval' must be >= 1"),
    train("optim.lr=-1", "'optim.lr' must be >= 0, got -1"),
    train("optim.lr=nan", "'optim.lr' must be >= 0, got nan"),
    train("train.batch_size=-1", "'train.batch_size' must be >= 1, got -1"),
    train("train.warmup_ratio=5", "'train.warmup_ratio' must be >= 0 and <= 1, got 5"),
    train("train.warmup_ratio=-0.1", "'train.warmup_ratio' must be >= 0 and <= 1"),
    train("datasets.0.max_samples=-1", "'datasets[0].max_samples' must be >= 1, got -1",
          "leave it unset"),
    train("data.max_length=0", "'data.max_length' must be >= 2, got 0"),
    train("method.r=0", "'method.r' must be >= 1, got 0"),
    train("method.alpha=0", "'method.alpha' must be > 0"),
    train("method.dropout=1.5", "'method.dropout' must be >= 0 and < 1, got 1.5"),
    train("optim.betas=[0.9,1.5]", "'optim.betas[1]' must be >= 0 and < 1, got 1.5"),
    train("optim.eps=0", "'optim.eps' must be > 0"),
    train("optim.weight_decay=-0.1", "'optim.weight_decay' must be >= 0"),
    train("optim.max_grad_norm=0", "'optim.max_grad_norm' must be > 0"),
    train("train.max_steps=0", "'train.max_steps' must be >= 1"),
    train("train.save_total_limit=-1", "'train.save_total_limit' must be >= 0",
          "0 keeps every checkpoint"),
    train("train.loss_chunk_size=0", "'train.loss_chunk_size' must be >= 1"),
    train("data.num_workers=-2", "'data.num_workers' must be >= 0"),
    train("evaluation.max_new_tokens=0", "'evaluation.max_new_tokens' must be >= 1"),
    train("seed=-1", "'seed' must be >= 0"),
    # -- types, names, relations -----------------------------------------------------------
    train("train.epochs=abc", "'train.epochs' must be int, got str 'abc'"),
    train("train.epoch=2", "unknown config key 'train.epoch'", "did you mean 'epochs'"),
    train("data.on_questionable=maybe", "'data.on_questionable' must be one of"),
    train("datasets=[]", "'datasets' is empty"),
    train("train.eval_interval=5", "'train.eval_interval' needs a validation set"),
    train("method.type=full method.use_dora=True", "'method.use_dora' applies to"),
    # -- paths: "not found" with the path, never the hub resolver's message ----------------
    train("model.path={tmp}/no_model", "'model.path': model directory not found",
          "no_model"),
    train("model.path={tmp}/docs_only", "'model.path'", "is not a model directory"),
    train("tokenizer.path=./no_tokenizer", "'tokenizer.path': tokenizer directory not found",
          "no_tokenizer"),
    train("datasets.0.path=./my_data_dir", "'datasets[0].path'", "not found", "my_data_dir"),
    train("datasets.0.path={tmp}/docs_only", "'datasets[0].path'", "holds no data file"),
    Case("config:val-file-missing", "train {tmp}/val_cfg.py",
         ["'val_datasets[0].path'", "not found: nope.jsonl"]),
    # -- the command line: one line, usage errors exit 2 -----------------------------------
    Case("cli:bare-word", "train {cfg} --cfg-options bareword", ["'bareword' is not KEY=VALUE"],
         2),
    Case("cli:unclosed-list", "train {cfg} --cfg-options train.epochs=[1,2",
         ["cannot parse the value of 'train.epochs=[1,2'"], 2),
    Case("cli:nproc-0", "train {cfg} --nproc 0", ["--nproc: must be >= 1, got 0"], 2),
    Case("cli:seed", "train {cfg} --seed -5", ["--seed: must be >= 0"], 2),
    Case("cli:engine", "train {cfg} --engine torch", ["invalid choice: 'torch'"], 2),
    Case("cli:unknown-command", "fly", ["invalid choice: 'fly'"], 2),
    Case("cli:no-config", "train no_such_config_xyz", ["no config file or shipped config"]),
    Case("cli:txt-config", "train {tmp}/notes.txt", ["is not a config file",
                                                     ".py, .json, .yaml"]),
    Case("cli:yaml-config", "train {tmp}/config.yaml", ["config.yaml",
                                                        "'train.epochs' must be >= 1"]),
    Case("cli:syntax-error", "train {tmp}/syntax_error.py", ["cannot load config",
                                                             "syntax_error.py"]),
    # -- data files: file, record and field ------------------------------------------------
    data("broken.json", "", "broken.json", "invalid JSON"),
    data("missing_field.json", "", "record 0", "field 'output'", "did you mean"),
    data("empty.json", "", "empty.json", "file is empty"),
    data("surrogate.json", "", "surrogate.json", "record 0", "field 'output'",
         "lone UTF-16 surrogate"),
    data("surrogate.jsonl", OPENAI, "surrogate.jsonl", "record 0",
         "field 'messages[0].content'", "lone UTF-16 surrogate"),
    data("weight_string.jsonl", OPENAI, "record 0", "field 'messages[1].weight'",
         "weight must be 0 or 1, got str '0'"),
    data("dup_header.csv", "", "dup_header.csv", "repeats a column name"),
    data("data.json", "data.max_length=8", "no training samples left", "4 records read",
         "4 samples longer than data.max_length=8 dropped", "data.truncation='truncate'"),
    # -- questionable data: counted with the first record (warn), or refused (error) --------
    data("two_users.jsonl", OPENAI, "1 × two user turns in a row (first: record 0",
         code=0),
    data("two_users.jsonl", f"{OPENAI} {STRICT}", "record 0", "messages[1]",
         "questionable record: two user turns in a row"),
    data("trailing_user.jsonl", OPENAI, "1 × conversation ends in a user turn", code=0),
    data("trailing_user.jsonl", f"{OPENAI} {STRICT}", "record 0", "field 'messages[2]'",
         "ends in a user turn"),
    data("placeholder.jsonl", OPENAI, "{{placeholder}} left unfilled", "{{name}}", code=0),
    data("placeholder.jsonl", f"{OPENAI} {STRICT}", "field 'messages[1].content'",
         "{{name}}"),
    data("unknown_call.jsonl", f"{OPENAI} {STRICT} template=qwen2_chat", "field 'messages[2].tool_call_id'",
         "matches no earlier call", "'c9'"),
    # -- valid input that used to be refused ------------------------------------------------
    data("numbers.csv", "", "numbers.csv: 2 records → 2 samples", code=0),
    # -- resume: which file, which key, why -------------------------------------------------
    Case("resume:past-the-end", "train {cfg} --work-dir {tmp}/mm_past --resume",
         ["iter_50.pth is at step 50, but this run has 2 optimizer steps"]),
    Case("resume:other-rank", "train {cfg} --resume {tmp}/mm_rank/iter_1.pth",
         ["iter_1.pth", f"'{LORA_A}.weight' has shape [3, 128]", "has [4, 128]",
          "method.r=4"]),
    Case("resume:other-method",
         "train {cfg} --resume {tmp}/mm_rank/iter_1.pth --cfg-options method.type=full",
         ["holds 1 weight(s) this run's model lacks", "method.type='full'"]),
    Case("resume:zip-not-checkpoint", "train {cfg} --resume {tmp}/not_a_checkpoint.pth",
         ["not_a_checkpoint.pth is not a readable checkpoint"]),
    Case("resume:not-a-zip", "train {cfg} --resume {tmp}/json_named.pth",
         ["json_named.pth is not a complete iter_N.pth checkpoint"]),
    Case("resume:missing", "train {cfg} --resume {tmp}/nope.pth", ["nope.pth does not exist"]),
    Case("resume:empty-work-dir", "train {cfg} --work-dir {tmp}/empty_wd --resume",
         ["no complete iter_N.pth checkpoint in"]),
    Case("resume:hf-past-the-end",
         "train {cfg} --engine hf --work-dir {tmp}/hf_past --resume",
         ["checkpoint-9 is at step 9, but this run has 2"]),
    Case("resume:hf-other-rank",
         "train {cfg} --engine hf --resume {tmp}/hf_rank/checkpoint-1",
         [f"'{LORA_A}.weight' has shape [3, 128]", "method.r=4"]),
    Case("resume:hf-no-state",
         "train {cfg} --engine hf --resume {tmp}/hf_no_state/checkpoint-1",
         ["is not a Trainer checkpoint (no trainer_state.json)"]),
    # -- convert -------------------------------------------------------------------------------
    Case("convert:other-rank", "convert pth_to_hf {cfg} {tmp}/hf_rank/checkpoint-1 {tmp}/out",
         [f"'{LORA_A}.weight' has shape [3, 128]", "method.r=4"]),
    Case("convert:zip", "convert pth_to_hf {cfg} {tmp}/not_a_checkpoint.pth {tmp}_out",
         ["not_a_checkpoint.pth: not a torch checkpoint file"]),
    Case("convert:missing", "convert pth_to_hf {cfg} {tmp}/nope.pth {tmp}_out",
         ["nope.pth does not exist"]),
    Case("convert:trained-weight-missing",
         "convert pth_to_hf {cfg} {tmp}/mm_past/iter_50.pth {tmp}/out",
         ["iter_50.pth has no weight", "which the config trains"]),
    Case("convert:merge-missing-base", "convert merge ./no_base {tmp}/not_an_adapter {tmp}/o",
         ["'BASE': base model directory not found", "no_base"]),
    Case("convert:merge-not-adapter",
         "convert merge xft://tiny-llama {tmp}/not_an_adapter {tmp}/o",
         ["not_an_adapter is not a PEFT adapter folder"]),
    Case("convert:split-missing", "convert split {tmp}/nope {tmp}/o --max-shard-size 1MB",
         ["nope is not a model directory"]),
    Case("convert:split-no-size", "convert split {tmp}/nope {tmp}/o",
         ["--max-shard-size"], 2),
    # -- chat ----------------------------------------------------------------------------------
    Case("chat:missing-dir", "chat {tmp}/no_model", ["model directory not found", "no_model"]),
    Case("chat:not-a-model", "chat {tmp}/docs_only", ["docs_only is not a model directory"]),
    Case("chat:missing-adapter", "chat xft://tiny-llama --adapter {tmp}/nope",
         ["'--adapter': adapter directory not found"]),
    Case("chat:top-p", "chat xft://tiny-llama --top-p 2", ["--top-p: must be > 0 and <= 1"],
         2),
    Case("chat:temperature", "chat xft://tiny-llama --temperature -1",
         ["--temperature: must be >= 0"], 2),
    Case("chat:max-new-tokens", "chat xft://tiny-llama --max-new-tokens 0",
         ["--max-new-tokens: must be >= 1, got 0"], 2),
    Case("chat:prompt-file-missing",
         "chat xft://tiny-llama --template chatml --prompt-file {tmp}/nope.jsonl",
         ["nope.jsonl: file not found"]),
    Case("chat:prompt-file-surrogate",
         "chat xft://tiny-llama --template chatml --prompt-file {tmp}/surrogate_prompt.jsonl",
         ["surrogate_prompt.jsonl line 1", "field 'prompt'", "lone UTF-16 surrogate"]),
    Case("chat:prompt-file-unanswerable",
         "chat xft://tiny-llama --template chatml --prompt-file {tmp}/two_users.jsonl",
         ["field 'messages[2].role'", "the last message must be the user's"]),
    # -- eval ----------------------------------------------------------------------------------
    Case("eval:nothing", "eval xft://tiny-llama", ["nothing to evaluate"]),
    Case("eval:batch-size", "eval xft://tiny-llama --batch-size 0",
         ["--batch-size: must be >= 1"], 2),
    Case("eval:max-length", "eval xft://tiny-llama --max-length 0",
         ["--max-length: must be >= 2"], 2),
    Case("eval:data-missing", "eval xft://tiny-llama --data {tmp}/nope.json",
         ["'--data': dataset file or directory not found"]),
    Case("eval:compare-missing", "eval xft://tiny-llama --task {tmp}/task.csv "
         "--prompt-column text --label-column label --compare ./no_base",
         ["'--compare': model directory not found"]),
    Case("eval:task-column", "eval xft://tiny-llama --task {tmp}/task.csv "
         "--prompt-column text --label-column gold", ["no column 'gold'", "text, label"]),
    Case("eval:task-empty-cell", "eval xft://tiny-llama --task {tmp}/task.csv "
         "--prompt-column text --label-column label", ["task.csv", "record 1", "field 'text'",
                                                        "empty value"]),
    Case("eval:task-no-columns", "eval xft://tiny-llama --task {tmp}/task.csv",
         ["--task needs --prompt-column and --label-column"]),
    Case("eval:label-map", "eval xft://tiny-llama --task {tmp}/task_ok.csv --prompt-column text "
         "--label-column label --label-map 1", ["--label-map: expected KEY=VALUE"]),
    # -- vocab ---------------------------------------------------------------------------------
    Case("vocab:corpus-missing", "vocab train --corpus {tmp}/nope.txt --vocab-size 100 "
         "--out {tmp}/v", ["nope.txt: file not found"]),
    Case("vocab:size", "vocab train --corpus {tmp}/notes.txt --vocab-size 0 --out {tmp}/v",
         ["--vocab-size: must be >= 2, got 0"], 2),
    Case("vocab:coverage", "vocab train --corpus {tmp}/notes.txt --vocab-size 50 "
         "--character-coverage 2 --out {tmp}/v", ["--character-coverage: must be > 0"], 2),
    Case("vocab:merge-base", "vocab merge --base ./no_base --add {tmp}/x.model --out {tmp}/v",
         ["no_base", "is not a directory"]),
    Case("vocab:merge-add", "vocab merge --base xft://tiny-llama --add {tmp}/x.model "
         "--out {tmp}/v", ["--add", "x.model", "no sentencepiece model"]),
    # -- template ------------------------------------------------------------------------------
    Case("template:unknown", "template render --template nope --tokenizer xft://tiny-llama "
         "--input {tmp}/two_users.jsonl", ["unknown chat template 'nope'", "chatml"]),
    Case("template:tokenizer", "template render --template chatml --tokenizer ./no_tok "
         "--input {tmp}/two_users.jsonl", ["'--tokenizer': tokenizer directory not found"]),
    Case("template:input-missing", "template render --template chatml --tokenizer "
         "xft://tiny-llama --input {tmp}/nope.jsonl",
         ["'--input'", "nope.jsonl", "not found"]),
    Case("template:surrogate", "template render --template chatml --tokenizer "
         "xft://tiny-llama --input {tmp}/surrogate.jsonl",
         ["surrogate.jsonl, record 0", "field 'messages[0].content'", "lone UTF-16 surrogate"]),
    Case("template:bad-json-line", "template render --template chatml --tokenizer "
         "xft://tiny-llama --input {tmp}/broken_line.jsonl",
         ["broken_line.jsonl, record 1", "invalid JSON on line 2"]),
    Case("template:no-action", "template", ["ACTION"], 2),
]


def test_the_corpus_is_large_and_covers_every_tool():
    assert len(CASES) >= 60
    commands = {case.argv.split()[0] for case in CASES}
    assert {"train", "check-dataset", "chat", "convert", "eval", "vocab", "template"} <= commands
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_answer(case, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)  # ./relative paths in the cases resolve (to nothing) here
    argv = case.argv.format(tmp=workspace, cfg=workspace / "cfg.py").split()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    assert code == case.code, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if case.code == 0:
        for fragment in case.expect:
            assert fragment.replace("{tmp}", str(workspace)) in out, out[-3000:]
        return
    line = err.strip().splitlines()[-1]
    prefix = "xft: error: " if case.code == 1 else "xft"
    assert line.startswith(prefix), err[-2000:]
    assert ": error: " in line
    for fragment in case.expect:
        assert fragment.replace("{tmp}", str(workspace)) in line, line


def test_every_numeric_config_key_has_a_range():
    """A numeric key added to the schema without a range in RANGES fails here."""
    import dataclasses
    import typing

    from xft.config import schema

    def numeric_keys(cls, prefix):
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            union = typing.get_origin(hint) is typing.Union
            inner = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
            key = f"{prefix}{f.name}"
            for option in inner:
                if dataclasses.is_dataclass(option):
                    yield from numeric_keys(option, f"{key}.")
                elif typing.get_origin(option) in (list, typing.List):
                    item = typing.get_args(option)[0]
                    if dataclasses.is_dataclass(item):
                        yield from numeric_keys(item, f"{key}[].")
                    elif item in (int, float):
                        yield f"{key}[]"
                elif option in (int, float):
                    yield key

    keys = set(numeric_keys(schema.Experiment, ""))
    own_checks = {"data.test_size", "datasets[].test_size",  # a fraction or a count
                  "val_datasets[].test_size", "val_datasets[].ratio"}  # refused on val files
    assert keys - own_checks <= set(schema.RANGES), keys - own_checks - set(schema.RANGES)
    assert set(schema.RANGES) <= keys


def test_unexpected_errors_say_what_xft_was_doing(monkeypatch, capsys):
    """A library exception inside a stage is named by the stage; --debug keeps the cause."""
    from xft.errors import StageError, doing

    with pytest.raises(StageError) as raised:
        with doing("loading the tokenizer from 'x'"):
            raise TypeError("TextEncodeInput must be Union[...]")
    assert str(raised.value) == ("while loading the tokenizer from 'x': TypeError: "
                                 "TextEncodeInput must be Union[...]")
    assert isinstance(raised.value.__cause__, TypeError)

    def broken(args):
        raise KeyError("sampler")

    monkeypatch.setattr("xft.cli.cmd_list_cfg", broken)
    assert main(["list-cfg"]) == 1
    line = capsys.readouterr().err.strip()
    assert line == ("xft: error: unexpected error in `xft list-cfg`: KeyError: 'sampler' "
                    "(run with --debug for the traceback)")
    with pytest.raises(KeyError):
        main(["--debug", "list-cfg"])


def test_questionable_policy_never_changes_what_is_trained(workspace):
    """'warn' trains a questionable record exactly as a clean run of it would."""
    from xft.build import build
    from xft.config.schema import validate

    raw = dict(model=dict(path="xft://tiny-llama"), template="chatml",
               datasets=[dict(path=str(workspace / "two_users.jsonl"), format="openai")],
               data=dict(cache=False))
    built = build(validate(raw), parts=("data",), log=lambda line: None)
    tokenizer, dataset, report = built.tokenizer, built.dataset, built.report
    record = JSONL["two_users.jsonl"][0]
    reference = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    assert tokenizer.decode(dataset[0]["input_ids"]) == reference
    counts = report.sources[0].questionable
    assert counts["consecutive_user_turns"]["count"] == 1
    assert counts["consecutive_user_turns"]["first_index"] == 0
