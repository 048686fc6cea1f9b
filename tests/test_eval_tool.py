"""`xft eval`: loss and perplexity on a dataset, accuracy on a labelled task, base vs
fine-tuned comparison. References are computed with plain transformers calls
(apply_chat_template, model(labels=...), generate)."""

import csv
import html
import json
import math

import pytest
import torch
from conftest import run_cli

from xft.cli import build_parser
from xft.errors import DataError
from xft.paths import resolve_path
from xft.tools.eval import answer_to_label, run_eval

TINY = "xft://tiny-llama"
QA = [("What is two plus two?", "Four."), ("Name a colour.", "Blue, like the sky."),
      ("你好吗?", "我很好，谢谢。")]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, tokenizer):
    """A small random Llama with the tiny tokenizer: it answers with arbitrary tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("random_model")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def eval_args(*argv):
    return build_parser().parse_args(["eval", *map(str, argv)])


def reference_answer(model, tokenizer, prompt, max_new_tokens):
    """Greedy answer from the tokenizer's own chat template and model.generate."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=[end, tokenizer.eos_token_id],
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_loss_and_perplexity_match_a_plain_forward(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in QA]),
                    encoding="utf-8")
    results = run_eval(eval_args(TINY, "--template", "chatml", "--data", data,
                                 "--out", tmp_path / "out"), log=lambda *a: None)
    model = AutoModelForCausalLM.from_pretrained(resolve_path(TINY))
    total = tokens = 0
    with torch.no_grad():
        for question, answer in QA:
            user = [{"role": "user", "content": question}]
            prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True,
                                                   tokenize=False)
            text = tokenizer.apply_chat_template(
                user + [{"role": "assistant", "content": answer}], tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            labels = torch.full_like(ids, -100)
            labels[0, start:-1] = ids[0, start:-1]  # the answer and <|im_end|>, not the last "\n"
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            tokens += n
    loss = results["loss"]
    assert loss["label_tokens"] == tokens and loss["samples"] == len(QA)
    assert loss["eval_loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert loss["eval_ppl"] == pytest.approx(math.exp(loss["eval_loss"]), rel=1e-9)
    saved = json.loads((tmp_path / "out/results.json").read_text(encoding="utf-8"))
    assert saved["loss"]["eval_loss"] == loss["eval_loss"]


def write_csv(path, rows, header=("评论", "标签")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def answers(random_model, tokenizer):
    """The random model's greedy answers to three review prompts, computed independently."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_model)
    reviews = ["这家酒店很干净，服务也好。", "房间太小了，很吵。", "早餐一般般。"]
    prompts = [f"判断评论的情感：{r}" for r in reviews]
    found = [reference_answer(model, tokenizer, p, 4).strip() for p in prompts]
    assert all(found) and len(set(found)) > 1  # non-empty and not all the same
    return reviews, found


@pytest.mark.slow
def test_accuracy_by_exact_match(tmp_path, random_model, answers):
    reviews, found = answers
    # Rows 0 and 2 are labelled with the model's own answer, row 1 with something else.
    task = write_csv(tmp_path / "reviews.csv", [(reviews[0], found[0]), (reviews[1], "不对"),
                                                (reviews[2], found[2])])
    results = run_eval(eval_args(random_model, "--template", "chatml", "--task", task,
                                 "--prompt-column", "评论", "--label-column", "标签",
                                 "--prompt-format", "判断评论的情感：{input}",
                                 "--max-new-tokens", 4, "--out", tmp_path / "out"),
                       log=lambda *a: None)
    assert results["task"]["correct"] == 2 and results["task"]["total"] == 3
    assert results["task"]["accuracy"] == pytest.approx(2 / 3)
    predictions = [json.loads(line) for line in (tmp_path / "out/predictions.jsonl").open()]
    assert [p["answer"].strip() for p in predictions] == found
    assert [p["correct"] for p in predictions] == [True, False, True]


@pytest.mark.slow
def test_accuracy_with_a_label_map(tmp_path, random_model, answers):
    reviews, found = answers
    positive = found[0]
    task = write_csv(tmp_path / "reviews.csv", [(r, label) for r, label in
                                                zip(reviews, ["1", "0", "1"])])
    results = run_eval(eval_args(random_model, "--template", "chatml", "--task", task,
                                 "--prompt-column", "评论", "--label-column", "标签",
                                 "--prompt-format", "判断评论的情感：{input}",
                                 "--label-map", f"1={positive}", "0=从未出现的回答",
                                 "--max-new-tokens", 4, "--out", tmp_path / "out"),
                       log=lambda *a: None)
    # Derived here: row 0 answers exactly the text of label 1; row 1 (label 0) cannot be
    # right, since "0" maps to a text the model never says; row 2 is right when its answer
    # contains label 1's text.
    row2 = positive.casefold() in found[2].casefold()
    assert results["task"]["correct"] == 1 + row2
    assert results["task"]["accuracy"] == pytest.approx((1 + row2) / 3)


@pytest.mark.slow
def test_batched_answers_equal_one_prompt_at_a_time(random_model, tokenizer):
    """Prompts of different lengths, left-padded into batches (the last one partial),
    with a system prompt: the same greedy answers as generating each alone, and as
    the tokenizer's own template with model.generate."""
    from transformers import AutoModelForCausalLM

    from xft.data.templates import get_template
    from xft.tools.eval import answer_prompts

    model = AutoModelForCausalLM.from_pretrained(random_model)
    template = get_template("chatml", tokenizer)
    prompts = ["Hi", "What is the capital of France, and why?", "你好吗?",
               "Count: one two three four five six seven", "ok"]
    alone = answer_prompts(model, tokenizer, template, prompts, max_new_tokens=6)
    batched = answer_prompts(model, tokenizer, template, prompts, max_new_tokens=6,
                             batch_size=2)
    assert batched == alone and len(set(alone)) > 1
    assert [a.strip() for a in alone] == [reference_answer(model, tokenizer, p, 6).strip()
                                          for p in prompts]
    with_system = answer_prompts(model, tokenizer, template, prompts, system="Be brief.",
                                 max_new_tokens=6, batch_size=3)
    assert with_system == answer_prompts(model, tokenizer, template, prompts,
                                         system="Be brief.", max_new_tokens=6)


@pytest.mark.parametrize("option", ["--batch-size", "--limit"])
def test_batch_size_and_limit_must_be_positive(tmp_path, capsys, option):
    from xft.cli import main

    assert main(["eval", TINY, "--data", str(tmp_path / "x.json"), option, "0"]) == 2
    assert f"argument {option}: must be >= 1, got 0" in capsys.readouterr().err


def test_answer_to_label_rules():
    mapping = {"0": "负面", "1": "正面"}
    assert answer_to_label(" 正面 ", mapping) == "1"
    assert answer_to_label("这条评论是负面的。", mapping) == "0"
    assert answer_to_label("正面还是负面?", mapping) is None  # names both labels
    assert answer_to_label("不知道", mapping) is None
    assert answer_to_label("  Four. ") == "Four."


@pytest.mark.slow
def test_compare_writes_both_answers_side_by_side(tmp_path, random_model, tokenizer):
    from transformers import AutoModelForCausalLM

    prompts = ["Who are you?", "Is 1 < 2 & 3 > 2?"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    results = run_eval(eval_args(random_model, "--template", "chatml", "--compare", TINY,
                                 "--prompts", tmp_path / "prompts.txt", "--max-new-tokens", 5,
                                 "--out", tmp_path / "out"), log=lambda *a: None)
    assert results["compare"]["prompts"] == 2
    markdown = (tmp_path / "out/compare.md").read_text(encoding="utf-8")
    page = (tmp_path / "out/compare.html").read_text(encoding="utf-8")
    tuned = AutoModelForCausalLM.from_pretrained(random_model)
    base = AutoModelForCausalLM.from_pretrained(resolve_path(TINY))
    for i, prompt in enumerate(prompts, 1):
        expected = [html.escape(prompt), html.escape(reference_answer(base, tokenizer, prompt, 5)),
                    html.escape(reference_answer(tuned, tokenizer, prompt, 5))]
        assert f"<tr><td>{i}</td>" + "".join(f"<td>{c}</td>" for c in expected) + "</tr>" in page
        md_cells = [c.replace("|", "\\|").replace("\n", "<br>") for c in expected]
        assert f"| {i} | " + " | ".join(md_cells) + " |" in markdown
    assert "1 &lt; 2 &amp; 3 &gt; 2" in page and "1 < 2" not in page


@pytest.mark.slow
def test_missing_column_names_file_and_column(tmp_path):
    task = write_csv(tmp_path / "reviews.csv", [("好", "1")], header=("review", "label"))
    with pytest.raises(DataError, match=r"reviews.csv: no column '标签' \(columns: review, label\)"):
        run_eval(eval_args(TINY, "--template", "chatml", "--task", task, "--prompt-column",
                           "review", "--label-column", "标签", "--out", tmp_path / "out"))
    result = run_cli("eval", TINY, "--template", "chatml", "--task", str(task),
                     "--prompt-column", "text", "--label-column", "label", check=False)
    assert result.returncode == 1
    assert "reviews.csv: no column 'text'" in result.stderr and "Traceback" not in result.stderr


def test_a_label_inside_another_label_is_not_named():
    """0=不满意 contains 1=满意: "不满意" names 0 only; each label is matched where it is not
    part of a longer label's text."""
    mapping = {"0": "不满意", "1": "满意"}
    assert answer_to_label("不满意", mapping) == "0"
    assert answer_to_label("这条评论不满意。", mapping) == "0"
    assert answer_to_label("顾客很满意", mapping) == "1"
    assert answer_to_label("满意，不是不满意", mapping) is None  # names both
    assert answer_to_label("一般", mapping) is None


def test_task_rows_with_empty_cells_fail_or_are_skipped_and_counted(tmp_path, random_model):
    task = write_csv(tmp_path / "reviews.csv", [("好吃", "1"), ("", "0"), ("难吃", ""),
                                                ("还行", "1"), ("一般", "0")])
    args = ["--template", "chatml", "--task", task, "--prompt-column", "评论",
            "--label-column", "标签", "--max-new-tokens", 2, "--out", tmp_path / "out"]
    with pytest.raises(DataError, match=r"reviews.csv, record 1, field '评论': empty value "
                                        r"\(skip such rows with --on-bad-record skip\)"):
        run_eval(eval_args(random_model, *args), log=lambda *a: None)
    lines = []
    results = run_eval(eval_args(random_model, *args, "--on-bad-record", "skip"),
                       log=lines.append)
    assert results["task"]["total"] == 3
    assert results["task"]["skipped_rows"] == {"empty '评论'": 1, "empty '标签'": 1}
    assert any("1 rows skipped: empty '标签'" in line for line in lines)
    results = run_eval(eval_args(random_model, *args, "--on-bad-record", "skip", "--limit", 3),
                       log=lambda *a: None)
    assert results["task"]["total"] == 1  # of the first 3 rows, only row 0 is usable


def test_per_label_precision_recall_and_confusion_matrix():
    from xft.tools.eval import task_accuracy, task_report_lines

    items = [("a", "1"), ("b", "1"), ("c", "0"), ("d", "0"), ("e", "0"), ("f", "1")]
    answers = ["正面", "负面", "负面", "正面", "不知道", None]
    summary, records = task_accuracy(items, answers, {"0": "负面", "1": "正面"})
    # Counted by hand: predicted 1 for a and d (a right), 0 for b and c (c right).
    assert summary["per_label"]["1"] == {"precision": 0.5, "recall": 1 / 3, "support": 3}
    assert summary["per_label"]["0"] == {"precision": 0.5, "recall": 1 / 3, "support": 3}
    assert summary["confusion"] == {"1": {"1": 1, "0": 1, "(too long)": 1},
                                    "0": {"0": 1, "1": 1, "(unmatched)": 1}}
    assert summary["unmatched"] == 1 and summary["too_long"] == 1
    assert summary["accuracy"] == pytest.approx(2 / 6)
    lines = task_report_lines(summary)
    assert any("(unmatched)" in line and "(too long)" in line for line in lines)


def test_prompts_beyond_the_model_context_are_counted_not_generated(random_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from xft.data.templates import get_template
    from xft.tools.eval import answer_prompts

    model = AutoModelForCausalLM.from_pretrained(random_model)
    context = model.config.max_position_embeddings
    too_long = "word " * context
    answers = answer_prompts(model, tokenizer, get_template("chatml", tokenizer),
                             ["Hi", too_long, "ok"], max_new_tokens=3, batch_size=2)
    assert answers[1] is None and answers[0] is not None and answers[2] is not None


@pytest.mark.slow
def test_compare_shows_reference_answers(tmp_path, random_model):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Who are you?", "reference": "I am Tuna."}) + "\n"
                       + json.dumps({"prompt": "Hi", "reference": "Hello <b>!"}) + "\n",
                       encoding="utf-8")
    run_eval(eval_args(random_model, "--template", "chatml", "--compare", TINY, "--prompts",
                       prompts, "--max-new-tokens", 3, "--out", tmp_path / "out"),
             log=lambda *a: None)
    markdown = (tmp_path / "out/compare.md").read_text(encoding="utf-8")
    page = (tmp_path / "out/compare.html").read_text(encoding="utf-8")
    assert markdown.splitlines()[0].startswith("| # | prompt | reference | base: ")
    assert "| 1 | Who are you? | I am Tuna. |" in markdown
    assert "<td>Hello &lt;b&gt;!</td>" in page
