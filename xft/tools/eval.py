"""`xft eval MODEL`: measure a model (a model directory, or base + adapter).

Three measurements, any of them in one call:

- `--data FILE`: eval loss and perplexity on a dataset of any xft format,
  encoded with the model's chat template exactly as training encodes it
  (xft.data.pipeline, the SFT objective) and scored by xft.engine.evaluate, the
  function training's validation uses.
- `--task FILE --prompt-column C --label-column C`: accuracy of greedy answers
  on a labelled task (CSV, JSON or JSONL). Without a label map an answer is
  correct when it equals the label (surrounding whitespace ignored). With
  `--label-map 0=负面 1=正面` the answer is mapped to the one label whose text
  it contains (exact equality first); an answer that names no label, or more
  than one, is unmatched and counts as wrong.
- `--compare BASE`: the same prompts answered by BASE and by MODEL, written
  side by side to compare.md and compare.html (text HTML-escaped).

Everything goes to --out: results.json, predictions.jsonl, compare.md/.html.
"""

import csv
import html
import json
from pathlib import Path

from xft.errors import DataError, XftError

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
COMPARE_MD, COMPARE_HTML = "compare.md", "compare.html"


# --- loss and perplexity ---------------------------------------------------------------------

def dataset_loss(model, tokenizer, template, path, fmt="alpaca", max_length=2048,
                 batch_size=4, system=None, placeholders=None, log=print):
    """(EvalResult (xft.engine.evaluate), its record) of the model on one dataset file."""
    from xft.config.schema import DataCfg, DatasetCfg
    from xft.data.pipeline import EncodedDataset, SourceBuild, load_source
    from xft.engine.evaluate import evaluate
    from xft.objectives.sft import SFT

    # The config sections training reads, so the file is read, mapped, rendered and
    # encoded by the same code (over-long samples dropped, counted).
    objective = SFT()
    source = DatasetCfg(path=str(path), format=fmt, placeholders=placeholders or {})
    build = SourceBuild(DataCfg(max_length=max_length), tokenizer, template, objective, system)
    samples, report = load_source(source, build)
    for line in report.lines():
        log(line)
    if not samples:
        raise DataError("no sample left to evaluate; see the report above", file=path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    result = evaluate(model, EncodedDataset(samples), objective.collator(pad_id, packed=False),
                      objective, batch_size)
    return result, result.record(objective)


# --- labelled tasks ----------------------------------------------------------------------------

def read_task(path, prompt_column, label_column):
    """[(prompt, label)] from a CSV (header row), JSON or JSONL file; labels as strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    else:
        from xft.data.pipeline import read_records

        rows = read_records(str(path))
        columns = sorted({k for row in rows if isinstance(row, dict) for k in row})
    for column in (prompt_column, label_column):
        if column not in columns:
            raise DataError(f"no column '{column}' (columns: {', '.join(columns) or 'none'})",
                            file=path)
    items = []
    for index, row in enumerate(rows):
        for column in (prompt_column, label_column):
            value = row.get(column) if isinstance(row, dict) else None
            if value is None or not str(value).strip():
                raise DataError("empty value", file=path, index=index, field=column)
        items.append((str(row[prompt_column]), str(row[label_column]).strip()))
    if not items:
        raise DataError("file has no rows", file=path)
    return items


def parse_pairs(pairs, option):
    """['0=负面', '1=正面'] → {'0': '负面', '1': '正面'}; `option` names the flag in errors."""
    mapping = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise XftError(f"{option}: expected KEY=VALUE, got {pair!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def answer_to_label(answer, label_map=None):
    """The label an answer stands for, or None when it names no label or several."""
    answer = answer.strip()
    if not label_map:
        return answer
    for label, text in label_map.items():
        if answer.casefold() == text.casefold():
            return label
    named = [label for label, text in label_map.items() if text.casefold() in answer.casefold()]
    return named[0] if len(named) == 1 else None


def answer_prompts(model, tokenizer, template, prompts, system=None, max_new_tokens=32,
                   batch_size=1):
    """Greedy answers, each prompt in a fresh conversation (as the training chat does),
    generated `batch_size` prompts at a time."""
    from xft.tools.chat import ChatSession

    session = ChatSession(model, tokenizer, template, system, max_new_tokens)
    start = [{"role": "system", "content": system}] if system else []
    conversations = [start + [{"role": "user", "content": prompt}] for prompt in prompts]
    answers = []
    for i in range(0, len(conversations), batch_size):
        answers += session.answer_batch(conversations[i:i + batch_size])
    return answers


def task_accuracy(items, answers, label_map=None):
    """(summary dict, per-item prediction records) for answers to (prompt, label) items."""
    if label_map:
        unknown = sorted({label for _, label in items} - set(label_map))
        if unknown:
            raise XftError(f"--label-map has no entry for label(s) {', '.join(unknown)}")
    records = []
    for index, ((prompt, label), answer) in enumerate(zip(items, answers)):
        predicted = answer_to_label(answer, label_map)
        records.append({"index": index, "prompt": prompt, "label": label, "answer": answer,
                        "predicted": predicted, "correct": predicted == label})
    correct = sum(r["correct"] for r in records)
    summary = {"accuracy": correct / len(records), "correct": correct, "total": len(records),
               "unmatched": sum(r["predicted"] is None for r in records)}
    return summary, records


# --- side-by-side comparison -------------------------------------------------------------------

def compare_tables(prompts, base_answers, tuned_answers, base_name, tuned_name):
    """(Markdown, HTML) tables: one row per prompt, base and fine-tuned answers side by side."""
    def md(text):
        return html.escape(text).replace("|", "\\|").replace("\n", "<br>")

    md_lines = [f"| # | prompt | base: {md(base_name)} | fine-tuned: {md(tuned_name)} |",
                "|---|---|---|---|"]
    rows = []
    for i, (prompt, base, tuned) in enumerate(zip(prompts, base_answers, tuned_answers), 1):
        md_lines.append(f"| {i} | {md(prompt)} | {md(base)} | {md(tuned)} |")
        cells = "".join(f"<td>{html.escape(text)}</td>" for text in (prompt, base, tuned))
        rows.append(f"<tr><td>{i}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ("#", "prompt", f"base: {base_name}", f"fine-tuned: {tuned_name}"))
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>xft eval: base vs "
            "fine-tuned</title>\n<style>table{border-collapse:collapse}td,th{border:1px solid "
            "#999;padding:4px;vertical-align:top;white-space:pre-wrap}</style></head><body>\n"
            f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n")
    return "\n".join(md_lines) + "\n", page


def read_prompts(path):
    """Prompts from a text file (one a line) or a JSON/JSONL file of strings or {prompt}."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    if path.suffix.lower() not in (".json", ".jsonl"):
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [p for p in prompts if p]
    from xft.data.pipeline import read_records

    prompts = []
    for index, record in enumerate(read_records(str(path))):
        value = record.get("prompt") if isinstance(record, dict) else record
        if not isinstance(value, str) or not value.strip():
            raise DataError("expected a string or an object with a 'prompt' string", file=path,
                            index=index, field="prompt" if isinstance(record, dict) else None)
        prompts.append(value)
    return prompts


# --- the command -------------------------------------------------------------------------------

def run_eval(args, log=print):
    """Run the measurements `args` asks for; returns the results dict written to results.json."""
    from xft.tools.chat import load_chat_model

    if not (args.data or args.task or args.compare):
        raise XftError("nothing to evaluate: give --data, --task and/or --compare")
    if args.batch_size < 1:
        raise XftError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.task and not (args.prompt_column and args.label_column):
        raise XftError("--task needs --prompt-column and --label-column")
    items = read_task(args.task, args.prompt_column, args.label_column) if args.task else []
    if args.prompt_format:  # the question asked around each prompt cell
        items = [(args.prompt_format.replace("{input}", prompt), label) for prompt, label in items]
    label_map = parse_pairs(args.label_map, "--label-map")
    placeholders = parse_pairs(args.placeholders, "--placeholders")
    if args.compare and not (args.prompts or items):
        raise XftError("--compare needs prompts: --prompts FILE or --task")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "adapter": args.adapter}

    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template)
    if args.data:
        result, record = dataset_loss(model, tokenizer, template, args.data, args.format,
                                      args.max_length, args.batch_size, args.system,
                                      placeholders, log)
        results["loss"] = {"data": args.data, "eval_loss": result.loss,
                           "eval_ppl": record["eval_ppl"], "label_tokens": result.count,
                           "samples": result.samples}
        log(f"eval_loss {result.loss:.4f}  eval_ppl {record['eval_ppl']:.4g}  "
            f"({result.count} label tokens in {result.samples} samples of {args.data})")
    task_prompts = [prompt for prompt, _ in items]
    task_answers = None
    if items:
        task_answers = answer_prompts(model, tokenizer, template, task_prompts, args.system,
                                      args.max_new_tokens, args.batch_size)
        summary, records = task_accuracy(items, task_answers, label_map)
        with open(out / PREDICTIONS_FILE, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        results["task"] = {"file": args.task, **summary}
        log(f"accuracy {summary['accuracy']:.4f} ({summary['correct']}/{summary['total']}, "
            f"{summary['unmatched']} answers matched no label); predictions in "
            f"{out / PREDICTIONS_FILE}")
    if args.compare:
        prompts = read_prompts(args.prompts) if args.prompts else task_prompts
        tuned = task_answers if not args.prompts else \
            answer_prompts(model, tokenizer, template, prompts, args.system, args.max_new_tokens,
                           args.batch_size)
        del model  # one model in memory at a time
        base_model, base_tokenizer, base_template = load_chat_model(
            args.compare, template_name=args.base_template or template.name)
        base = answer_prompts(base_model, base_tokenizer, base_template, prompts, args.system,
                              args.max_new_tokens, args.batch_size)
        tuned_name = args.adapter or args.model
        markdown, page = compare_tables(prompts, base, tuned, args.compare, tuned_name)
        (out / COMPARE_MD).write_text(markdown, encoding="utf-8")
        (out / COMPARE_HTML).write_text(page, encoding="utf-8")
        results["compare"] = {"base": args.compare, "prompts": len(prompts),
                              "files": [str(out / COMPARE_MD), str(out / COMPARE_HTML)]}
        log(f"comparison of {len(prompts)} answers: {out / COMPARE_MD}, {out / COMPARE_HTML}")
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    return results
