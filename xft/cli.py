"""The `xft` command: a table of in-process subcommands.

Every subcommand runs in this process. On failure the command prints one line,
`xft: error: ...`, and exits non-zero; `--debug` prints the traceback instead.
"""

import argparse
import sys

from xft import __version__
from xft.engine.engines import ENGINES
from xft.errors import XftError


class RenamedOption(argparse.Action):
    """An option that was renamed: using it is an error that names the new one."""

    def __init__(self, option_strings, dest, new, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}")


def cmd_train(args):
    from xft.engine.launch import launch, launch_settings, without_option

    settings = launch_settings(args.nproc)
    if settings is not None:  # several processes: torchrun re-runs this command in each
        if args.deepspeed is not None:
            from xft.engine.deepspeed_config import load_deepspeed_json

            load_deepspeed_json(args.deepspeed)  # a bad choice fails once, before launching
        return launch(settings, without_option(args.argv, "--nproc"))
    from xft.engine.distributed import is_main_process
    from xft.engine.train import train

    out = train(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                seed=args.seed, resume=args.resume, engine=args.engine,
                deepspeed=args.deepspeed)
    if is_main_process():
        print(f"xft: training finished; Hugging Face artifact in {out}")


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
    check_dataset(args.config, cfg_options=args.cfg_options, num_samples=args.samples,
                  plot=args.plot, color=color)


def cmd_chat(args):
    from xft.tools.chat import run_chat

    run_chat(args)


def cmd_eval(args):
    from xft.tools.eval import run_eval

    run_eval(args)

def cmd_convert(args):
    if args.action == "pth_to_hf":
        from xft.tools.pth_to_hf import pth_to_hf

        pth_to_hf(args.config, args.checkpoint, args.out, args.max_shard_size, args.cfg_options)
    elif args.action == "merge":
        from xft.tools.merge import merge_adapter

        merge_adapter(args.base, args.adapter, args.out, args.dtype, args.max_shard_size)
    else:
        from xft.tools.split import split_model

        split_model(args.src, args.out, args.max_shard_size)


def cmd_template(args):
    from xft.tools import template_cli

    if args.action == "list":
        template_cli.list_templates()
        return
    count = template_cli.render_file(args.template, args.tokenizer, args.input, args.output,
                                     args.train_on)
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
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(prog="xft", description="Fine-tune large language models.")
    parser.add_argument("--version", action="version", version=f"xft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    p = sub.add_parser("train", parents=[common], help="train a config (a shipped name or a file)")
    p.add_argument("config", help="config name (see list-cfg) or path to a config file")
    p.add_argument("--work-dir", help="where checkpoints, logs and the artifact go")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="override config keys, e.g. train.epochs=2 optim.lr=1e-4")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--engine", choices=list(ENGINES),
                   help="training engine (overrides the config's train.engine)")
    p.add_argument("--backend", action=RenamedOption, new="--engine", help=argparse.SUPPRESS)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="resume from CKPT (mmengine: iter_N.pth; hf: a checkpoint-N folder), "
                        "or from the newest checkpoint in the work dir")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes on this node (torchrun; default: "
                        "$NPROC_PER_NODE or 1; multi-node: NNODES, NODE_RANK, ADDR, PORT)")
    p.add_argument("--deepspeed", metavar="NAME|JSON",
                   help="DeepSpeed ZeRO: zero1, zero2, zero2_offload, zero3, zero3_offload, "
                        "or a DeepSpeed JSON file ('auto' values come from the config)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("list-cfg", parents=[common], help="list shipped configs")
    p.add_argument("-p", "--pattern", help="only names containing this text")
    p.set_defaults(func=cmd_list_cfg)

    p = sub.add_parser("copy-cfg", parents=[common], help="copy a shipped config to edit it")
    p.add_argument("name", help="config name (see list-cfg)")
    p.add_argument("dest", help="destination directory")
    p.set_defaults(func=cmd_copy_cfg)

    p = sub.add_parser("check-dataset", parents=[common],
                       help="validate a config's datasets, show masked samples and statistics")
    p.add_argument("config", help="config name (see list-cfg) or path to a config file")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="override config keys, e.g. data.max_length=1024")
    p.add_argument("--samples", type=int, default=3, help="how many samples to show")
    p.add_argument("--plot", help="where to write the length histogram "
                   "(default: <config name>_lengths.png)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="mark trained text in colour (auto: when printing to a terminal)")
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
    p.add_argument("--bits", type=int, choices=[4, 8],
                   help="load the model quantized by bitsandbytes")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 (the default): greedy; above 0: sample at this temperature")
    p.add_argument("--top-p", type=float, help="sampling: nucleus probability mass")
    p.add_argument("--top-k", type=int, help="sampling: keep the k most likely tokens")
    p.add_argument("--repetition-penalty", type=float, help="e.g. 1.1; 1.0 is none")
    p.add_argument("--seed", type=int, help="random seed, for reproducible sampling")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("eval", parents=[common], help="eval loss/perplexity on a dataset, "
                       "accuracy on a labelled task, answers side by side with a base model")
    p.add_argument("model", help="model directory, hub id, or an adapter directory")
    p.add_argument("--adapter", help="PEFT adapter directory to apply to the model")
    p.add_argument("--template", help="chat template name (default: the one saved with the model)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--out", default="xft_eval", help="folder for results.json, predictions.jsonl "
                   "and the comparison tables (default: xft_eval)")
    p.add_argument("--data", help="dataset file for eval loss and perplexity")
    p.add_argument("--format", default="alpaca", help="format of --data (as in a config)")
    p.add_argument("--placeholders", nargs="+", metavar="KEY=VALUE",
                   help="{{KEY}} → VALUE in --data records, e.g. name=Tuna")
    p.add_argument("--max-length", type=int, default=2048,
                   help="--data samples longer than this are dropped (and counted)")
    p.add_argument("--batch-size", type=int, default=4,
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
    p.add_argument("--prompts", help="prompts for --compare: a text file (one a line) or JSON/JSONL "
                   "(default: the --task prompts)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate only the first N rows of --task / prompts of --prompts")
    p.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="a --task row with an empty cell: stop with its index (default) or "
                        "skip it and count it")
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
    c.add_argument("--max-shard-size", help="full models: largest safetensors file, e.g. 2GB")
    c.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="the overrides training used, if any")
    c = actions.add_parser("merge", parents=[common],
                           help="fold a LoRA/QLoRA adapter into its base → full model folder")
    c.add_argument("base", help="base model directory or hub id")
    c.add_argument("adapter", help="PEFT adapter directory")
    c.add_argument("out", help="output directory")
    c.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="dtype of the merged weights (the base is loaded unquantized in it)")
    c.add_argument("--max-shard-size", help="largest safetensors file, e.g. 2GB")
    c = actions.add_parser("split", parents=[common],
                           help="re-shard a model directory's safetensors")
    c.add_argument("src", help="model directory")
    c.add_argument("out", help="output directory")
    c.add_argument("--max-shard-size", required=True, help="largest file, e.g. 500MB")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("template", parents=[common], help="list chat templates, or render data "
                       "with one to see its tokens and labels")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="template names with a description")
    r = actions.add_parser("render", parents=[common],
                           help="JSONL of {messages} → JSONL of {text, input_ids, labels}")
    r.add_argument("--template", required=True, help="template name (see `xft template list`)")
    r.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    r.add_argument("--input", required=True,
                   help='JSON Lines file, one {"messages": [...]} a line')
    r.add_argument("--output", help="write here instead of stdout")
    r.add_argument("--train-on", choices=["all", "last"], default="all",
                   help="train every assistant turn (all) or only the final one (last)")
    p.set_defaults(func=cmd_template)

    p = sub.add_parser("vocab", parents=[common], help="train a sentencepiece vocabulary, or "
                       "merge one into a model's tokenizer")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", parents=[common], help="train a sentencepiece model")
    t.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                   help=".txt (one sentence a line) or .json/.jsonl/.csv/.parquet records")
    t.add_argument("--text-field", action="append", metavar="NAME",
                   help="record field holding text (repeatable; default: text)")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    t.add_argument("--character-coverage", type=float, default=0.9995,
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
    args = parser.parse_args(argv)
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
        kind = "" if isinstance(e, XftError) else f"{type(e).__name__}: "
        message = " ".join(str(e).split())  # one line, whatever the exception holds
        print(f"xft: error: {kind}{message} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return code or 0
