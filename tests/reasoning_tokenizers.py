"""Faithful test tokenizers for Qwen3 and DeepSeek-R1-Distill-Qwen, built from the real Qwen2
byte-level BPE in ../shared/data/tokenizers/qwen2 (both families use that vocabulary) plus each
family's added tokens, in the families' own order and specialness (from their public
tokenizer_config.json files). The official chat templates are the fixtures."""

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

# Ids 151646.. of Qwen3 (151643-151645 are Qwen2's <|endoftext|>, <|im_start|>, <|im_end|>).
QWEN3_ADDED = [("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
               ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
               ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
               ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
               ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False),
               ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
               ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False),
               ("</tool_response>", False), ("<think>", False), ("</think>", False)]
# DeepSeek-R1-Distill-Qwen: the Qwen2 BPE with DeepSeek's tokens from id 151643 on (the
# tool tokens' ids are not those of the real file; no test depends on them).
R1_ADDED = [("<｜end▁of▁sentence｜>", True), ("<｜User｜>", False), ("<｜Assistant｜>", False),
            ("<｜begin▁of▁sentence｜>", True), ("<|EOT|>", True), ("<think>", False),
            ("</think>", False), ("<｜tool▁calls▁begin｜>", False),
            ("<｜tool▁calls▁end｜>", False), ("<｜tool▁call▁begin｜>", False),
            ("<｜tool▁call▁end｜>", False), ("<｜tool▁outputs▁begin｜>", False),
            ("<｜tool▁outputs▁end｜>", False), ("<｜tool▁output▁begin｜>", False),
            ("<｜tool▁output▁end｜>", False), ("<｜tool▁sep｜>", False)]


def _build(shared_data, added, drop_qwen_specials=False):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    qwen2 = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "qwen2")
    if not drop_qwen_specials:
        backend = qwen2.backend_tokenizer
        backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in added])
        return PreTrainedTokenizerFast(tokenizer_object=backend)
    # Same BPE and pre-tokenizer, but only the family's own added tokens.
    vocab = {k: v for k, v in qwen2.get_vocab().items() if v < 151643}
    merges = (shared_data / "tokenizers" / "qwen2" / "merges.txt").read_text(
        encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in merges if line and not line.startswith("#")]
    backend = Tokenizer(models.BPE(vocab, merges, ignore_merges=False))
    backend.pre_tokenizer = qwen2.backend_tokenizer.pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    backend.normalizer = qwen2.backend_tokenizer.normalizer
    backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in added])
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def qwen3_tokenizer(shared_data):
    tokenizer = _build(shared_data, QWEN3_ADDED)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = (FIXTURES / "qwen3.jinja").read_text(encoding="utf-8")
    assert tokenizer.convert_tokens_to_ids("</think>") == 151668
    return tokenizer


def deepseek_r1_tokenizer(shared_data):
    tokenizer = _build(shared_data, R1_ADDED, drop_qwen_specials=True)
    tokenizer.bos_token, tokenizer.eos_token = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    tokenizer.chat_template = (FIXTURES / "deepseek_r1.jinja").read_text(encoding="utf-8")
    assert tokenizer.convert_tokens_to_ids("</think>") == 151649
    return tokenizer
