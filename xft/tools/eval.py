"""`xft eval MODEL`: measure a model (a model directory, or base + adapter).

Three measurements, any of them in one call:

- `--data FILE|NAME`: eval loss and perplexity on a dataset (any format, a config's
  map function, a mapping, a registry name, a run's heldout.jsonl: xft.tools.data_args),
  encoded with the model's chat template exactly as training encodes it
  (xft.data.pipeline, the SFT objective) and scored by xft.engine.evaluate, the
  function training's validation uses.
- `--task FILE --prompt-column C --label-column C`: accuracy of greedy answers
  on a labelled task (CSV, JSON or JSONL). Without a label map an answer is
  correct when it equals the label (surrounding whitespace ignored). With
  `--label-map 0=负面 1=正面` the answer is mapped to the one label whose text
  it contains (exact equality first); an answer that names no label, or more
  than one, is unmatched and counts as wrong.
- `--compare BASE`: the same prompts (a prompt file or any dataset, whose last
  answers are the references) answered by BASE and by MODEL, written side by side
  to compare.md and compare.html (text HTML-escaped).
- `--reward PAIRS --format FMT`: MODEL is a reward model (objective 'reward'):
  its pairwise accuracy on a file of preference pairs (docs/preference.md).

Everything goes to --out: results.json, predictions.jsonl, compare.md/.html.
"""

import csv
import html
import json
from collections import Counter
from pathlib import Path

from xft.errors import DataError, RecordError, XftError
from xft.paths import MODEL_FILES, check_local, resolve_path
from xft.tools.data_args import dataset_entry, is_registry_name, parse_pairs

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
COMPARE_MD, COMPARE_HTML = "compare.md", "compare.html"


# --- loss and perplexity ---------------------------------------------------------------------

def dataset_loss(model, tokenizer, template, source, max_length=2048, batch_size=4,
                 system=None, on_bad_record="error", log=print):
    """(EvalResult (xft.engine.evaluate), its record) of the model on one dataset (a
    DatasetCfg, see xft.tools.data_args)."""
    from xft.objectives.sft import SFT

    return evaluate_source(model, SFT(), tokenizer, template, source, max_length, batch_size,
                           system, on_bad_record, log)


def evaluate_source(model, objective, tokenizer, template, source, max_length=2048,
                    batch_size=4, system=None, on_bad_record="error", log=print):
    """(EvalResult, its record): `objective`'s loss and metrics of the model on one dataset."""
    from xft.config.schema import DataCfg
    from xft.data.pipeline import EncodedDataset, SourceBuild, load_source
    from xft.engine.evaluate import evaluate

    # The config sections training reads, so the file is read, mapped, rendered and
    # encoded by the same code (over-long samples dropped, counted).
    data = DataCfg(max_length=max_length, on_bad_record=on_bad_record)
    build = SourceBuild(data, tokenizer, template, objective, system)
    samples, report = load_source(source, build)
    for line in report.lines():
        log(line)
    if not samples:
        raise DataError("no sample left to evaluate; see the report above", file=source.path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    result = evaluate(model, EncodedDataset(samples), objective.collator(pad_id, packed=False),
                      objective, batch_size)
    return result, result.record(objective)


# --- reward models -----------------------------------------------------------------------------

def reward_accuracy(model_dir, source, template_name=None, max_length=2048, batch_size=4,
                    system=None, on_bad_record="error", log=print):
    """The validation record of a reward model (a sequence-classification directory, as
    `objective='reward'` exports it) on a dataset of preference pairs (a DatasetCfg):
    eval_accuracy (pairs whose chosen reply scores higher), eval_margin, eval_loss
    (Bradley-Terry)... The pairs are encoded with the model's chat template as training
    encodes them."""
    from xft.inference.reward import load_reward_model
    from xft.objectives.preference import RewardModel

    scorer = load_reward_model(model_dir, template_name)
    _, record = evaluate_source(scorer.model, RewardModel(), scorer.tokenizer, scorer.template,
                                source, max_length, batch_size, system, on_bad_record, log)
    return record


# --- labelled tasks ----------------------------------------------------------------------------

def read_task(path, prompt_column, label_column, on_bad_record="error", limit=None):
    """([(prompt, label)], skipped) from a CSV (header row), JSON or JSONL file; labels as
    strings. A row with an empty cell fails with its index, or (on_bad_record='skip') is
    skipped and counted; `limit` keeps the first rows."""
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
    items, skipped = [], Counter()
    for index, row in enumerate(rows[:limit] if limit else rows):
        empty = [c for c in (prompt_column, label_column)
                 if not isinstance(row, dict) or row.get(c) is None or not str(row[c]).strip()]
        if empty:
            if on_bad_record == "error":
                raise DataError("empty value (skip such rows with --on-bad-record skip)",
                                file=path, index=index, field=empty[0])
            skipped[f"empty '{empty[0]}'"] += 1
            continue
        items.append((str(row[prompt_column]), str(row[label_column]).strip()))
    if not items:
        raise DataError("file has no usable rows", file=path)
    return items, skipped


def answer_to_label(answer, label_map=None):
    """The label an answer stands for, or None when it names no label or several.

    An answer names a label when it contains the label's text somewhere that is not part
    of a longer label's text: with 0=不满意 and 1=满意, "不满意" names 0 only.
    """
    answer = answer.strip()
    if not label_map:
        return answer
    folded = answer.casefold()
    for label, text in label_map.items():
        if folded == text.casefold():
            return label
    spans = {label: _occurrences(folded, text.casefold()) for label, text in label_map.items()}
    named = []
    for label, own in spans.items():
        longer = [span for other, others in spans.items() for span in others
                  if len(label_map[other]) > len(label_map[label])]
        if any(not any(s <= start and end <= e for s, e in longer) for start, end in own):
            named.append(label)
    return named[0] if len(named) == 1 else None


def _occurrences(text, part):
    """[start, end) of every occurrence of `part` in `text` (overlapping ones too)."""
    spans, start = [], text.find(part)
    while part and start >= 0:
        spans.append((start, start + len(part)))
        start = text.find(part, start + 1)
    return spans


def answer_prompts(model, tokenizer, template, prompts, system=None, max_new_tokens=32,
                   batch_size=1, progress=None):
    """Greedy answers, each prompt in a fresh conversation (as the training chat does),
    generated `batch_size` prompts at a time. A prompt is a string (the user's message,
    after `system`) or a conversation that ends where the answer starts.

    Prompts are batched by length (longest first: little padding, and the slowest batch
    shows up in the ETA early) and answered in their given order. A prompt whose tokens
    and `max_new_tokens` exceed the model's context is not generated for: its answer is
    None, and callers count it. `progress` (a tqdm-like bar) is advanced per prompt.
    """
    from xft.tools.chat import ChatSession

    session = ChatSession(model, tokenizer, template, system, max_new_tokens)
    start = [{"role": "system", "content": system}] if system else []
    conversations = [prompt if isinstance(prompt, list)
                     else start + [{"role": "user", "content": prompt}] for prompt in prompts]
    lengths = [session.prompt_ids(c)["input_ids"].shape[-1] for c in conversations]
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    answers = [None] * len(prompts)
    fits = [i for i, n in enumerate(lengths) if context is None or n + max_new_tokens <= context]
    order = sorted(fits, key=lambda i: -lengths[i])
    for at in range(0, len(order), batch_size):
        batch = order[at:at + batch_size]
        for i, answer in zip(batch, session.answer_batch([conversations[i] for i in batch])):
            answers[i] = answer
        if progress is not None:
            progress.update(len(batch))
    if progress is not None:
        progress.update(len(prompts) - len(fits))
    return answers


def task_accuracy(items, answers, label_map=None):
    """(summary dict, per-item prediction records) for answers to (prompt, label) items.

    An answer of None (the prompt did not fit the model's context) is counted as
    `too_long` and wrong. The summary holds per-label precision and recall and the
    confusion matrix (gold label → predicted label, None for an unmatched answer).
    """
    if label_map:
        unknown = sorted({label for _, label in items} - set(label_map))
        if unknown:
            raise XftError(f"--label-map has no entry for label(s) {', '.join(unknown)}")
    records = []
    for index, ((prompt, label), answer) in enumerate(zip(items, answers)):
        predicted = None if answer is None else answer_to_label(answer, label_map)
        records.append({"index": index, "prompt": prompt, "label": label, "answer": answer,
                        "predicted": predicted, "correct": predicted == label})
    correct = sum(r["correct"] for r in records)
    confusion = {}
    for r in records:
        row = confusion.setdefault(r["label"], {})
        key = ("(too long)" if r["answer"] is None else
               "(unmatched)" if r["predicted"] is None else r["predicted"])
        row[key] = row.get(key, 0) + 1
    per_label = {}
    for label in sorted({r["label"] for r in records} | set(label_map or {})):
        predicted = sum(r["predicted"] == label for r in records)
        gold = sum(r["label"] == label for r in records)
        hits = sum(r["predicted"] == label == r["label"] for r in records)
        per_label[label] = {"precision": hits / predicted if predicted else None,
                            "recall": hits / gold if gold else None, "support": gold}
    summary = {"accuracy": correct / len(records), "correct": correct, "total": len(records),
               "unmatched": sum(r["predicted"] is None and r["answer"] is not None
                                for r in records),
               "too_long": sum(r["answer"] is None for r in records),
               "per_label": per_label, "confusion": confusion}
    return summary, records


def task_report_lines(summary):
    """Per-label precision/recall and the confusion matrix as aligned text lines."""
    labels = list(summary["per_label"])
    columns = labels + [extra for extra in ("(unmatched)", "(too long)")
                        if any(extra in row for row in summary["confusion"].values())]
    width = max(len(str(c)) for c in ["gold \\ answer", *columns]) + 2
    lines = ["label        precision  recall  support"]
    for label, stats in summary["per_label"].items():
        def pct(value):
            return "   -   " if value is None else f"{value:7.3f}"
        lines.append(f"{label:<12} {pct(stats['precision'])}  {pct(stats['recall'])}  "
                     f"{stats['support']:7d}")
    lines.append("confusion (rows: gold label, columns: answer)")
    lines.append("".join(str(c).rjust(width) for c in ["gold \\ answer", *columns]))
    for label in labels:
        row = summary["confusion"].get(label, {})
        lines.append(str(label).rjust(width)
                     + "".join(str(row.get(c, 0)).rjust(width) for c in columns))
    return lines


# --- side-by-side comparison -------------------------------------------------------------------

def compare_tables(prompts, base_answers, tuned_answers, base_name, tuned_name,
                   references=None):
    """(Markdown, HTML) tables: one row per prompt with the reference answer (when known),
    the base model's and the fine-tuned model's answers side by side."""
    def md(text):
        return html.escape(text).replace("|", "\\|").replace("\n", "<br>")

    headers = ["#", "prompt", *(["reference"] if references else []), f"base: {base_name}",
               f"fine-tuned: {tuned_name}"]
    md_lines = ["| " + " | ".join(md(h) for h in headers) + " |",
                "|" + "---|" * len(headers)]
    rows = []
    for i, prompt in enumerate(prompts):
        cells = [prompt_text(prompt), *([references[i] or ""] if references else []),
                 _shown(base_answers[i]), _shown(tuned_answers[i])]
        md_lines.append(f"| {i + 1} | " + " | ".join(md(c) for c in cells) + " |")
        rows.append(f"<tr><td>{i + 1}</td>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>xft eval: base vs "
            "fine-tuned</title>\n<style>table{border-collapse:collapse}td,th{border:1px solid "
            "#999;padding:4px;vertical-align:top;white-space:pre-wrap}</style></head><body>\n"
            f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n")
    return "\n".join(md_lines) + "\n", page


def _shown(answer):
    return "(prompt too long for the model's context)" if answer is None else answer


def prompt_text(prompt):
    """A prompt as the comparison table shows it: the text, or a conversation's turns."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"[{m['role']}] {m['content'] or ''}" for m in prompt)


def read_prompts(source, system=None, on_bad_record="error", plain=True):
    """(prompts, reference answers or None) of `source` (a DatasetCfg, see
    xft.tools.data_args): a text file (one prompt a line), a JSON/JSONL file of strings
    or {"prompt", "reference"?} objects (unless `plain` is False: a format, mapping or
    registry name was given), or any dataset (e.g. a run's heldout.jsonl): each
    conversation up to its last assistant message is a prompt, and that message is the
    reference."""
    from xft.data.pipeline import read_records

    path = Path(resolve_path(source.path))
    if path.is_file() and path.suffix.lower() not in (".json", ".jsonl", ".csv", ".parquet"):
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [p for p in prompts if p], None
    records = read_records(source.path)
    first = records[0]
    if isinstance(first, str) or (plain and isinstance(first, dict) and "prompt" in first
                                  and source.format != "heldout"):
        return _plain_prompts(records, source.path)
    return dataset_prompts(records, source, system, on_bad_record)


def _plain_prompts(records, path):
    prompts, references = [], []
    for index, record in enumerate(records):
        value = record.get("prompt") if isinstance(record, dict) else record
        if not isinstance(value, str) or not value.strip():
            raise DataError("expected a string or an object with a 'prompt' string", file=path,
                            index=index, field="prompt" if isinstance(record, dict) else None)
        prompts.append(value)
        reference = record.get("reference") if isinstance(record, dict) else None
        references.append(reference if isinstance(reference, str) else None)
    return prompts, (references if any(r is not None for r in references) else None)


def dataset_prompts(records, source, system=None, on_bad_record="error", log=print):
    """(prompt conversations, reference answers) of a dataset's records, read by the
    training pipeline's map step (xft.data.pipeline.map_records)."""
    from xft.config.schema import DataCfg
    from xft.data.conversation import with_system
    from xft.data.pipeline import SourceReport, map_records

    def split(mapped):
        if isinstance(mapped, str):
            raise RecordError("a pretraining document has no prompt to answer")
        messages = with_system(mapped, system)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:last], messages[last]["content"]

    if source.max_samples is not None:
        records = records[:source.max_samples]
    report = SourceReport(path=source.path, records=len(records))
    pairs, _ = map_records(records, source, DataCfg(on_bad_record=on_bad_record), split,
                           report)
    if report.skipped_bad:
        log(f"{source.path}: {report.skipped_bad} records skipped")
        for line in list(report.lines())[1:]:
            log(line)
    if not pairs:
        raise DataError("no record left to take prompts from", file=source.path)
    return [p for p, _ in pairs], [r for _, r in pairs]


# --- the command -------------------------------------------------------------------------------

def _progress(total, what):
    """A progress bar with rate and ETA on stderr (tqdm, as transformers uses)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="prompt", dynamic_ncols=True)


def _answer(model, tokenizer, template, prompts, args, what):
    with _progress(len(prompts), what) as bar:
        return answer_prompts(model, tokenizer, template, prompts, args.system,
                              args.max_new_tokens, args.batch_size, progress=bar)


def run_reward_eval(args, log=print):
    """`xft eval REWARD_MODEL --reward PAIRS --format FMT`: pairwise accuracy → results.json."""
    if args.data or args.task or args.compare or args.adapter:
        raise XftError("--reward scores a reward model alone: no --data, --task, --compare "
                       "or --adapter with it")
    from xft.objectives.preference import RewardModel

    check_local(args.model, "reward model directory", "MODEL", need=("config.json",))
    source = dataset_entry(args.reward, args, "--reward", "sharegpt_pairs",
                           check_format=RewardModel().map_function)
    record = reward_accuracy(args.model, source, args.template, args.max_length,
                             args.batch_size, args.system, args.on_bad_record, log)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "reward": {"data": args.reward, **record}}
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    log(f"eval_accuracy {record['eval_accuracy']:.4f}  eval_margin {record['eval_margin']:.4g}  "
        f"({record['eval_count']} pairs of {args.reward}); {out / RESULTS_FILE}")
    return results


def run_eval(args, log=print):
    """Run the measurements `args` asks for; returns the results dict written to results.json."""
    from xft.tools.chat import load_chat_model

    if args.reward:
        return run_reward_eval(args, log)
    if not (args.data or args.task or args.compare):
        raise XftError("nothing to evaluate: give --data, --task, --compare and/or --reward")
    if args.task and not (args.prompt_column and args.label_column):
        raise XftError("--task needs --prompt-column and --label-column")
    # Data options and paths fail here, before any file is read or a model is loaded.
    data_source = dataset_entry(args.data, args, "--data", "alpaca") if args.data else None
    if args.compare:
        check_local(args.compare, "model directory", "--compare", need=MODEL_FILES)
    items, skipped = (read_task(args.task, args.prompt_column, args.label_column,
                                args.on_bad_record, args.limit) if args.task else ([], Counter()))
    for reason, count in skipped.items():
        log(f"{args.task}: {count} rows skipped: {reason}")
    if args.prompt_format:  # the question asked around each prompt cell
        items = [(args.prompt_format.replace("{input}", prompt), label) for prompt, label in items]
    label_map = parse_pairs(args.label_map, "--label-map")
    if args.compare and not (args.prompts or items):
        raise XftError("--compare needs prompts: --prompts FILE or --task")
    prompts = references = None
    if args.compare and args.prompts:
        source = dataset_entry(args.prompts, args, "--prompts", "alpaca")
        prompts, references = read_prompts(
            source, args.system, args.on_bad_record,
            plain=not (args.format or args.columns or args.tags
                       or is_registry_name(args.prompts)))
        prompts, references = prompts[:args.limit], references and references[:args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "adapter": args.adapter}

    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template)
    if data_source:
        result, record = dataset_loss(model, tokenizer, template, data_source,
                                      args.max_length, args.batch_size, args.system,
                                      args.on_bad_record, log)
        results["loss"] = {"data": args.data, "eval_loss": result.loss,
                           "eval_ppl": record["eval_ppl"], "label_tokens": result.count,
                           "samples": result.samples}
        log(f"eval_loss {result.loss:.4f}  eval_ppl {record['eval_ppl']:.4g}  "
            f"({result.count} label tokens in {result.samples} samples of {args.data})")
    task_prompts = [prompt for prompt, _ in items]
    task_answers = None
    if items:
        task_answers = _answer(model, tokenizer, template, task_prompts, args, "task")
        summary, records = task_accuracy(items, task_answers, label_map)
        with open(out / PREDICTIONS_FILE, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        results["task"] = {"file": args.task, "skipped_rows": dict(skipped), **summary}
        log(f"accuracy {summary['accuracy']:.4f} ({summary['correct']}/{summary['total']}, "
            f"{summary['unmatched']} answers matched no label, {summary['too_long']} prompts "
            f"too long for the model's context); predictions in {out / PREDICTIONS_FILE}")
        for line in task_report_lines(summary):
            log(line)
    if args.compare:
        if prompts is not None:
            tuned = _answer(model, tokenizer, template, prompts, args, "fine-tuned")
        else:
            prompts, tuned = task_prompts, task_answers
            references = [label_map.get(label, label) for _, label in items]
        del model  # one model in memory at a time
        base_model, base_tokenizer, base_template = load_chat_model(
            args.compare, template_name=args.base_template or template.name)
        base = _answer(base_model, base_tokenizer, base_template, prompts, args, "base")
        tuned_name = args.adapter or args.model
        markdown, page = compare_tables(prompts, base, tuned, args.compare, tuned_name,
                                        references)
        (out / COMPARE_MD).write_text(markdown, encoding="utf-8")
        (out / COMPARE_HTML).write_text(page, encoding="utf-8")
        results["compare"] = {"base": args.compare, "prompts": len(prompts),
                              "too_long": sum(a is None for a in base + tuned),
                              "files": [str(out / COMPARE_MD), str(out / COMPARE_HTML)]}
        log(f"comparison of {len(prompts)} answers: {out / COMPARE_MD}, {out / COMPARE_HTML}")
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    return results
