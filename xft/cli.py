"""The `xft` command: a table of in-process subcommands.

Every subcommand runs in this process. On failure the command prints one line,
`xft: error: ...`, and exits non-zero; `--debug` prints the traceback instead.
"""

import argparse
import sys

from xft import __version__
from xft.engine.engines import ENGINES
from xft.errors import XftError
from xft.xtuner_spellings import SpellingError, translate


class RenamedOption(argparse.Action):
    """An option that was renamed: using it is an error that names the new one."""

    def __init__(self, option_strings, dest, new, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `xft train: error: ... (see xft train -h)`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


def ranged(kind, low=None, high=None, low_open=False):
    """An argparse `type` that parses `kind` and checks a range (xft.config.schema.Range)."""
    from xft.config.schema import Range

    allowed = Range(low, high, low_open=low_open)

    def parse(text):
        value = kind(text)  # ValueError: argparse says "invalid int value"
        if not allowed.allows(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


AT_LEAST_1 = ranged(int, 1)
SEED = ranged(int, 0, 2**32 - 1)  # as the config's `seed`


def cfg_options_action():
    """MMEngine's KEY=VALUE parser, with malformed options as usage errors, not tracebacks."""
    from mmengine.config import DictAction

    class CfgOptions(DictAction):
        def __call__(self, parser, namespace, values, option_string=None):
            for item in values:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise argparse.ArgumentError(self, f"'{item}' is not KEY=VALUE "
                                                       "(e.g. train.epochs=2)")
                try:
                    self._parse_iterable(value)
                except (AssertionError, ValueError) as e:  # mmengine asserts on brackets
                    raise argparse.ArgumentError(self, f"cannot parse the value of '{item}': "
                                                       f"{e}") from None
            super().__call__(parser, namespace, values, option_string)

    return CfgOptions


def add_config_arguments(p, example):
    """CONFIG, then bare KEY=VALUE overrides (torchtune's habit), and --cfg-options."""
    DictAction = cfg_options_action()
    p.add_argument("config", help="config name (see list-cfg) or path to a config file "
                   "(.py, .yaml, .json)")
    p.add_argument("overrides", nargs="*", action=DictAction, metavar="KEY=VALUE",
                   help=f"override config keys, e.g. {example}")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="the same as KEY=VALUE after the config (these win)")


def late_overrides(parser, args, extra):
    """KEY=VALUE overrides placed after other options (`xft train CFG --engine hf a.b=1`):
    argparse has taken the config's positionals by then and leaves these over."""
    if not hasattr(args, "overrides") or any(arg.startswith("-") or "=" not in arg
                                             for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    action = cfg_options_action()(["overrides"], "overrides", nargs="*")
    action(parser, args, extra)  # merges into args.overrides, KEY=VALUE checked


def config_options(args):
    """The overrides after the config, then --cfg-options (which win)."""
    return {**(args.overrides or {}), **(args.cfg_options or {})}


def cmd_train(args):
    from xft.console import set_verbose
    from xft.engine.launch import launch, launch_settings, without_option

    set_verbose(args.verbose)

    settings = launch_settings(args.nproc)
    if settings is not None:  # several processes: torchrun re-runs this command in each
        if args.deepspeed is not None:
            from xft.engine.deepspeed_config import load_deepspeed_json

            load_deepspeed_json(args.deepspeed)  # a bad choice fails once, before launching
        return launch(settings, without_option(args.argv, "--nproc"))
    from xft.engine.distributed import is_main_process
    from xft.engine.train import train

    out = train(args.config, work_dir=args.work_dir, cfg_options=config_options(args),
                seed=args.seed, resume=args.resume, engine=args.engine,
                deepspeed=args.deepspeed, plan=not args.no_plan, force=args.force)
    if is_main_process():
        print(f"xft: training finished; Hugging Face artifact in {out}")


def cmd_plan(args):
    from xft.config.loader import load_config
    from xft.estimate.gpus import find_gpu, local_gpu, parse_memory
    from xft.estimate.report import plan_lines, plan_run

    _, experiment = load_config(args.config, config_options(args))
    if args.gpu_memory:
        gpu = parse_memory(args.gpu_memory)
    else:
        gpu = find_gpu(args.gpu) if args.gpu else local_gpu()
    plan = plan_run(experiment, gpu, args.nproc, args.deepspeed, args.mfu,
                    count_data=not args.no_data)
    for line in plan_lines(plan):
        print(line)
    if gpu is None:
        print("verdict: name a GPU (--gpu NAME or --gpu-memory SIZE) for a verdict")


def cmd_list_cfg(args):
    from xft.config import list_configs

    for name in list_configs(args.pattern):
        print(name)


def cmd_copy_cfg(args):
    from xft.config import copy_config

    print(f"xft: copied to {copy_config(args.name, args.dest)}")


def cmd_check_dataset(args):
    from xft.tools.check_dataset import check_dataset

    color = {"auto": None, "always": True, "never": False}[args.color]
    check_dataset(args.config, cfg_options=config_options(args), num_samples=args.samples,
                  plot=args.plot, color=color,
                  data=(args.data, args) if args.data else None)


def cmd_chat(args):
    from xft.tools.chat import run_chat

    run_chat(args)


def cmd_serve(args):
    from xft.serve import run_serve

    run_serve(args)


def cmd_webui(args):
    from xft.webui import run_webui

    run_webui(args)


def cmd_eval(args):
    from xft.tools.eval import run_eval

    run_eval(args)

def cmd_convert(args):
    if args.action == "pth_to_hf":
        from xft.tools.pth_to_hf import pth_to_hf

        pth_to_hf(args.config, args.checkpoint, args.out, args.max_shard_size, args.cfg_options,
                  overwrite=args.overwrite)
    elif args.action == "merge":
        from xft.tools.merge import merge_adapter

        merge_adapter(args.base, args.adapter, args.out, args.dtype, args.max_shard_size,
                      overwrite=args.overwrite)
    else:
        from xft.tools.split import split_model

        split_model(args.src, args.out, args.max_shard_size, overwrite=args.overwrite)


def cmd_convert_config(args):
    from xft.tools.convert_config import convert_config

    for note in convert_config(args.src, args.out):
        print(f"xft: note: {note}")
    print(f"xft: wrote {args.out}")


def cmd_template(args):
    from xft.tools import template_cli

    if args.action == "list":
        template_cli.list_templates()
        return
    if args.action == "check":
        problems = template_cli.check_template(args.model, args.template, args.input)
        if problems:
            raise XftError(f"template check: {problems} problem(s) in {args.model} (see above)")
        return
    count = template_cli.render_args(args)
    if args.output:
        print(f"xft: wrote {count} samples to {args.output}")


def cmd_vocab(args):
    from xft.tools import vocab

    if args.action == "train":
        path, stats = vocab.train_vocab(args.corpus, args.out, args.vocab_size, args.model_type,
                                        args.text_field or ["text"], args.character_coverage)
        print(f"xft: trained a {args.model_type} sentencepiece model of {args.vocab_size} "
              f"pieces on {stats.line()}: {path}")
        return
    report = vocab.merge_tokenizer(args.base, args.add, args.out,
                                   keep_digit_pieces=args.keep_digit_pieces,
                                   scripts=args.scripts or ())
    for line in report.lines():
        print(f"xft: {line}")
    print(f"xft: merged tokenizer saved to {args.out}")


def build_parser():
    from xft.tools.data_args import add_data_arguments

    DictAction = cfg_options_action()
    parser = Parser(prog="xft", description="Fine-tune large language models.")
    parser.add_argument("--version", action="version", version=f"xft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the top-level value.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    p = sub.add_parser("train", parents=[common], help="train a config (a shipped name or a file)")
    add_config_arguments(p, "train.epochs=2 optim.lr=1e-4")
    p.add_argument("--work-dir", help="where checkpoints, logs and the artifact go")
    p.add_argument("--seed", type=SEED, help="random seed (overrides the config)")
    p.add_argument("--engine", choices=list(ENGINES),
                   help="training engine (overrides the config's train.engine)")
    p.add_argument("--backend", action=RenamedOption, new="--engine", help=argparse.SUPPRESS)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="resume from CKPT (mmengine: iter_N.pth; hf: a checkpoint-N folder), "
                        "or from the newest checkpoint in the work dir")
    p.add_argument("--force", action="store_true",
                   help="break the work dir's lock left by a run that is gone")
    p.add_argument("--nproc", type=AT_LEAST_1, metavar="N",
                   help="train in N processes on this node (torchrun; default: "
                        "$NPROC_PER_NODE or 1; multi-node: NNODES, NODE_RANK, ADDR, PORT)")
    p.add_argument("--deepspeed", metavar="NAME|JSON",
                   help="DeepSpeed ZeRO: zero1, zero2, zero2_offload, zero3, zero3_offload, "
                        "or a DeepSpeed JSON file ('auto' values come from the config)")
    p.add_argument("--verbose", action="store_true",
                   help="also show the libraries' output: MMEngine's environment and hook "
                        "tables, warnings, their progress bars")
    p.add_argument("--no-plan", action="store_true",
                   help="skip the memory plan that warns, on a GPU, when the run will not fit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plan", parents=[common], help="will a config fit a GPU, and how fast "
                       "will it run: peak memory by term (measured on fake tensors), speed")
    add_config_arguments(p, "train.batch_size=2")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", metavar="NAME", help="e.g. H100-SXM, A100-80GB, RTX-4090, L4 "
                     "(default: this machine's GPU, if any)")
    gpu.add_argument("--gpu-memory", metavar="SIZE", help="a card of this size, e.g. 8GB")
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="processes (GPUs)")
    p.add_argument("--deepspeed", metavar="NAME|JSON",
                   help="zero1, zero2, zero2_offload, zero3, zero3_offload, or a JSON file")
    p.add_argument("--mfu", type=float, default=0.3,
                   help="model FLOPs utilisation assumed for the speed (default: 0.3)")
    p.add_argument("--no-data", action="store_true",
                   help="do not build the datasets to count an epoch's tokens")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("list-cfg", parents=[common], help="list shipped configs")
    p.add_argument("-p", "--pattern", help="only names containing this text")
    p.set_defaults(func=cmd_list_cfg)

    p = sub.add_parser("copy-cfg", parents=[common], help="copy a shipped config to edit it")
    p.add_argument("name", help="config name (see list-cfg)")
    p.add_argument("dest", help="destination directory")
    p.set_defaults(func=cmd_copy_cfg)

    p = sub.add_parser("check-dataset", parents=[common],
                       help="validate a config's datasets, show masked samples and statistics")
    add_config_arguments(p, "data.max_length=1024")
    p.add_argument("--samples", type=ranged(int, 0), default=3, help="how many samples to show")
    p.add_argument("--plot", help="where to write the length histogram "
                   "(default: <config name>_lengths.png)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="mark trained text in colour (auto: when printing to a terminal)")
    p.add_argument("--data", help="check this dataset (a file, a run's heldout.jsonl, or a "
                   "registry name) instead of the config's, as the config would train it")
    add_data_arguments(p, "alpaca")
    p.set_defaults(func=cmd_check_dataset)

    p = sub.add_parser("chat", parents=[common], help="chat with a model or adapter directory")
    p.add_argument("model", help="model directory, hub id, or an adapter directory")
    p.add_argument("--adapter", help="PEFT adapter directory to apply to the model")
    p.add_argument("--template", help="chat template name (default: the one saved with the model)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--prompt", help="answer this one prompt and exit")
    p.add_argument("--prompt-file", metavar="FILE",
                   help='answer each line of a JSONL file ({"prompt": ...} or {"messages": '
                        '[...]}) and write JSONL lines with an "answer"')
    p.add_argument("--output", help="with --prompt-file: write here instead of stdout")
    p.add_argument("--multiline", action="store_true",
                   help="interactive: a message ends at an empty line (press Enter twice), "
                        "as in XTuner; without it Enter sends, and a pasted block is one "
                        "message where the terminal marks pastes (most do)")
    p.add_argument("--bits", type=int, choices=[4, 8],
                   help="load the model quantized by bitsandbytes")
    p.add_argument("--max-new-tokens", type=AT_LEAST_1, default=256)
    p.add_argument("--temperature", type=ranged(float, 0), default=0.0,
                   help="0 (the default): greedy; above 0: sample at this temperature")
    p.add_argument("--top-p", type=ranged(float, 0, 1, low_open=True),
                   help="sampling: nucleus probability mass")
    p.add_argument("--top-k", type=AT_LEAST_1, help="sampling: keep the k most likely tokens")
    p.add_argument("--repetition-penalty", type=ranged(float, 0, low_open=True),
                   help="e.g. 1.1; 1.0 is none")
    p.add_argument("--seed", type=SEED, help="random seed, for reproducible sampling")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", parents=[common],
                       help="serve a model over an OpenAI-compatible HTTP API (a reward "
                            "model: scores on POST /v1/score/evaluation)")
    p.add_argument("model", help="model directory, hub id, or an adapter directory")
    p.add_argument("--adapter", help="PEFT adapter directory to apply to the model")
    p.add_argument("--template", help="chat template name (default: the one saved with the model)")
    p.add_argument("--bits", type=int, choices=[4, 8],
                   help="load the model quantized by bitsandbytes")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 routes")
    p.add_argument("--max-concurrency", type=int, default=64, metavar="N",
                   help="requests admitted at once, one generating and the rest queued; "
                        "more get 429 (default 64)")
    p.add_argument("--served-model-name", help="model id clients send (default: the folder name)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning",
                                                           "info", "debug"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("webui", parents=[common],
                       help="a browser UI to configure, train, watch, chat and export")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--runs-dir", default="work_dirs",
                   help="where runs started from the UI write their work dirs (default work_dirs)")
    p.set_defaults(func=cmd_webui)

    p = sub.add_parser("eval", parents=[common], help="eval loss/perplexity on a dataset, "
                       "accuracy on a labelled task, answers side by side with a base model")
    p.add_argument("model", help="model directory, hub id, or an adapter directory")
    p.add_argument("--adapter", help="PEFT adapter directory to apply to the model")
    p.add_argument("--template", help="chat template name (default: the one saved with the model)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--out", default="xft_eval", help="folder for results.json, predictions.jsonl "
                   "and the comparison tables (default: xft_eval)")
    p.add_argument("--data", help="dataset for eval loss and perplexity: a file (a run's "
                   "heldout.jsonl too) or a registry name")
    add_data_arguments(p, "alpaca")
    p.add_argument("--reward", metavar="PAIRS", help="MODEL is a reward model: its pairwise "
                   "accuracy on this file of preference pairs (--format e.g. sharegpt_pairs)")
    p.add_argument("--max-length", type=ranged(int, 2), default=2048,
                   help="--data samples longer than this are dropped (and counted)")
    p.add_argument("--batch-size", type=AT_LEAST_1, default=4,
                   help="samples per forward for --data, prompts per generate call for "
                   "--task and --compare (default: 4)")
    p.add_argument("--task", help="labelled task file (CSV with a header row, JSON or JSONL)")
    p.add_argument("--prompt-column", help="--task column holding the prompt")
    p.add_argument("--label-column", help="--task column holding the expected label")
    p.add_argument("--label-map", nargs="+", metavar="LABEL=ANSWER",
                   help="answer text of each label, e.g. 0=负面 1=正面 (default: the answer "
                        "must equal the label)")
    p.add_argument("--prompt-format", help="question around each prompt cell, with {input} "
                   "where the cell goes")
    p.add_argument("--compare", metavar="BASE", help="also answer the prompts with BASE and "
                   "write compare.md / compare.html")
    p.add_argument("--base-template", help="template for BASE (default: MODEL's)")
    p.add_argument("--prompts", help="prompts for --compare: a text file (one a line), JSON/JSONL "
                   "of strings or {prompt, reference}, or any dataset as for --data (a run's "
                   "heldout.jsonl: the last answer is the reference) (default: the --task "
                   "prompts)")
    p.add_argument("--max-new-tokens", type=AT_LEAST_1, default=32)
    p.add_argument("--limit", type=AT_LEAST_1, metavar="N",
                   help="evaluate only the first N rows of --task / prompts of --prompts")
    p.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="a bad --task row or --data/--prompts record: stop with its index "
                        "(default) or skip it and count it")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", parents=[common], help="checkpoint to Hugging Face format, "
                       "merge an adapter into its base, re-shard a model")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("pth_to_hf", parents=[common],
                           help="training checkpoint (MMEngine iter_N.pth, Trainer "
                                "checkpoint-N/, DeepSpeed folder) → adapter or model folder")
    c.add_argument("config", help="the config that trained it (name or file)")
    c.add_argument("checkpoint", help="iter_N.pth, checkpoint-N folder or DeepSpeed folder")
    c.add_argument("out", help="output directory")
    c.add_argument("--max-shard-size",
                   help="full models: largest safetensors file, e.g. 2GB (default 5GB)")
    c.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it already holds files")
    c.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="the overrides training used, if any")
    c = actions.add_parser("merge", parents=[common],
                           help="fold a LoRA/QLoRA adapter into its base → full model folder")
    c.add_argument("base", help="base model directory or hub id")
    c.add_argument("adapter", help="PEFT adapter directory")
    c.add_argument("out", help="output directory")
    c.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="dtype of the merged weights (the base is loaded unquantized in it); "
                        "auto, the default: the base's own dtype")
    c.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it already holds files")
    c.add_argument("--max-shard-size", help="largest safetensors file, e.g. 2GB (default 5GB)")
    c = actions.add_parser("split", parents=[common],
                           help="re-shard a model directory's safetensors")
    c.add_argument("src", help="model directory")
    c.add_argument("out", help="output directory")
    c.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it already holds files")
    c.add_argument("--max-shard-size", required=True, help="largest file, e.g. 500MB")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("convert-config", parents=[common],
                       help="a LLaMA-Factory training YAML or an XTuner Python config → an "
                            "xft YAML config")
    p.add_argument("src", help="LLaMA-Factory YAML (e.g. examples/train_lora/llama3_lora_sft."
                               "yaml) or XTuner .py (e.g. qwen1_5_0_5b_chat_qlora_alpaca_e3.py)")
    p.add_argument("out", help="the xft YAML to write (must not exist)")
    p.set_defaults(func=cmd_convert_config)

    p = sub.add_parser("template", parents=[common], help="list chat templates, or render data "
                       "with one to see its tokens and labels")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="template names with a description")
    r = actions.add_parser("render", parents=[common],
                           help="a dataset → JSONL of {text, input_ids, labels}")
    r.add_argument("--template", required=True, help="template name (see `xft template list`)")
    r.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    r.add_argument("--input", required=True,
                   help='dataset file (default format openai: one {"messages": [...]} a line) '
                        'or registry name')
    add_data_arguments(r, "openai")
    r.add_argument("--system", help="system prompt for records without one")
    r.add_argument("--output", help="write here instead of stdout")
    r.add_argument("--train-on", choices=["all", "last"], default="all",
                   help="train every assistant turn (all) or only the final one (last)")
    k = actions.add_parser("check", parents=[common],
                           help="compare a template with a model's own chat_template: text, "
                                "ids, trained tokens, stop tokens")
    k.add_argument("model", help="model or tokenizer directory (or hub id)")
    k.add_argument("--template", help="template name (default: the one saved with the model, "
                                      "else auto)")
    k.add_argument("--input", help='JSON Lines of {"messages": [...]} (default: shipped samples)')
    p.set_defaults(func=cmd_template)

    p = sub.add_parser("vocab", parents=[common], help="train a sentencepiece vocabulary, or "
                       "merge one into a model's tokenizer")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", parents=[common], help="train a sentencepiece model")
    t.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                   help=".txt (one sentence a line) or .json/.jsonl/.csv/.parquet records")
    t.add_argument("--text-field", action="append", metavar="NAME",
                   help="record field holding text (repeatable; default: text)")
    t.add_argument("--vocab-size", type=ranged(int, 2), required=True)
    t.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    t.add_argument("--character-coverage", type=ranged(float, 0, 1, low_open=True),
                   default=0.9995,
                   help="share of characters covered by the vocabulary (rest: <unk>)")
    t.add_argument("--out", required=True, help="directory for tokenizer.model")
    m = actions.add_parser("merge", parents=[common],
                           help="append new pieces to a model's tokenizer (base ids unchanged)")
    m.add_argument("--base", required=True, help="base tokenizer directory: sentencepiece-based "
                   "(tokenizer.model) or byte-level BPE")
    m.add_argument("--add", required=True,
                   help="sentencepiece .model file, or a directory holding one")
    m.add_argument("--out", required=True, help="directory for the merged tokenizer")
    m.add_argument("--keep-digit-pieces", action="store_true",
                   help="also add pieces that join digits to other characters when the base "
                        "splits digits")
    m.add_argument("--scripts", nargs="+", metavar="SCRIPT",
                   help="add only pieces written in these Unicode scripts (e.g. Han), so text "
                        "in other scripts keeps the base's tokenization")
    p.set_defaults(func=cmd_vocab)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv, notes = translate(argv)
    except SpellingError as e:
        print(f"xft: error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"xft: note: {note}", file=sys.stderr)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            late_overrides(parser, args, extra)
    except SystemExit as e:  # usage errors (one line, printed by Parser), --help, --version
        return e.code
    args.argv = argv  # `xft train --nproc` hands them on to its workers
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("xft: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"xft: error: {error_message(e, args)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return code or 0


def error_message(error, args):
    """One line for any exception: xft's own errors as they are; anything else says
    which command it broke, since its text alone rarely tells the user what failed."""
    if isinstance(error, XftError):
        message = str(error)
    else:
        command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        message = f"unexpected error in `xft {command}`: {type(error).__name__}: {error}"
    return " ".join(message.split())  # one line, whatever the exception holds
