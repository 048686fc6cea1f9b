"""The registered prompt formats, one ChatTemplate per model family.

Each entry reproduces the family's official chat template (its
tokenizer_config.json `chat_template`, or the documented format for base-model
templates); tests/fixtures/chat_templates/ holds the reference jinja each one
is checked against.
"""

from xft.data.templates.base import ChatTemplate

_CHATML = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_suffix="<|im_end|>",
    turn_separator="\n",
    stop_words=("<|im_end|>",),
)

_QWEN_TOOLS = dict(tool="\n<tool_response>\n{content}\n</tool_response>",
                   tool_group=("<|im_start|>user", "<|im_end|>\n"), tool_calls="qwen",
                   tool_definitions="qwen")
_QWEN3 = dict(think=("<think>\n", "\n</think>\n\n"), **_QWEN_TOOLS, **_CHATML)

# Mistral-style [INST] formats: BOS once, no generation prompt ("[/INST]" ends the prompt),
# user/assistant must alternate.
_INST = dict(prefix="{bos_token}", assistant_prefix=" ", assistant_suffix="{eos_token}",
             system="{content}\n\n", generation_prompt="", alternate=True)

_LLAMA31_SYSTEM = ("<|start_header_id|>system<|end_header_id|>\n\n{environment}Cutting Knowledge "
                   "Date: December 2023\nToday Date: 26 Jul 2024\n\n{{content}}<|eot_id|>")

FAMILIES = [
    ChatTemplate(
        name="default", description="plain 'User:/Assistant:' turns for base models",
        prefix="{bos_token}", system="System: {content}\n", user="User: {content}\n",
        assistant_prefix="Assistant: ", assistant_suffix="{eos_token}", turn_separator="\n",
        # No trailing space: in training it merges into the reply's first word ('▁Lam'),
        # so a prompt ending in a lone '▁' is one the model never saw.
        generation_prompt="Assistant:"),
    ChatTemplate(
        name="alpaca", description="Stanford Alpaca instruction format for base models",
        prefix="{bos_token}", system="{content}\n\n",
        default_system="Below is an instruction that describes a task. Write a response that "
                       "appropriately completes the request.",
        user="### Instruction:\n{content}\n\n", assistant_prefix="### Response:\n",
        assistant_suffix="{eos_token}", turn_separator="\n\n"),
    ChatTemplate(name="chatml", description="ChatML without a default system prompt "
                 "(xft's tiny default model)", **_CHATML),
    ChatTemplate(
        name="qwen2_chat", description="Qwen2 / Qwen2.5 instruct (ChatML, tools)",
        default_system="You are a helpful assistant.", **_QWEN_TOOLS, **_CHATML),
    # Qwen3 (hybrid thinking): ChatML, tools as Qwen2.5, no default system prompt, and the
    # thinking rule of its official template (see `think` in base.py, docs/templates.md).
    ChatTemplate(name="qwen3", description="Qwen3 (thinking; earlier replies' thoughts "
                 "dropped, as its template)", **_QWEN3),
    ChatTemplate(name="qwen3_keep_thinking", description="Qwen3 with every reply's thoughts "
                 "kept and trained", think_history="keep", **_QWEN3),
    ChatTemplate(name="yi_chat", description="Yi-6B/34B chat (ChatML, no default system prompt)",
                 **_CHATML),
    ChatTemplate(name="internlm2_chat", description="InternLM2 chat (BOS + ChatML)",
                 prefix="{bos_token}", **_CHATML),
    ChatTemplate(
        name="vicuna", description="Vicuna v1.1 ('USER: ... ASSISTANT: ...')",
        prefix="{bos_token}", system="{content} ",
        default_system="A chat between a curious user and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the user's "
                       "questions.",
        user="USER: {content} ", assistant_prefix="ASSISTANT: ", assistant_suffix="{eos_token}",
        generation_prompt="ASSISTANT:"),
    ChatTemplate(
        name="llama2_chat", description="Llama 2 chat ([INST], system inside the first turn)",
        system="<<SYS>>\n{content}\n<</SYS>>\n\n", system_placement="first_user",
        user="{bos_token}[INST] {content} [/INST]", assistant_prefix=" ",
        assistant_suffix=" {eos_token}", generation_prompt="", alternate=True,
        strip_roles=("user", "assistant")),
    ChatTemplate(
        name="llama3_chat", description="Llama 3 instruct (header ids, <|eot_id|>)",
        prefix="{bos_token}",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant_suffix="<|eot_id|>", strip_roles=("system", "user", "assistant"),
        stop_words=("<|eot_id|>",)),
    # Llama 3.1 / 3.2 / 3.3 (one template): a system turn always, headed by the knowledge
    # cutoff and a date; tool definitions in front of the first user message; one JSON call
    # per reply; tool results in 'ipython' turns, the content written as a JSON string (the
    # official template's `is iterable` test is true for strings). The date is fixed at
    # 26 Jul 2024, Llama 3.1's default: Llama 3.2's template prints today's date, which a
    # training set cannot follow (docs/templates.md).
    ChatTemplate(
        name="llama3_1", description="Llama 3.1 / 3.2 / 3.3 instruct (dated system header, "
                                     "tools, ipython results)",
        prefix="{bos_token}", system=_LLAMA31_SYSTEM.format(environment=""),
        tools_system=_LLAMA31_SYSTEM.format(environment="Environment: ipython\n"),
        default_system="", user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant_suffix="<|eot_id|>", strip_roles=("system", "user", "assistant"),
        tool="<|start_header_id|>ipython<|end_header_id|>\n\n{content_json}<|eot_id|>",
        tool_calls="llama3", tool_definitions="llama3", stop_words=("<|eot_id|>",)),
    ChatTemplate(
        name="mistral", description="Mistral 7B Instruct v0.1/v0.2 (system in the first [INST])",
        system_placement="first_user", user=" [INST] {content} [/INST]", **_INST),
    ChatTemplate(
        name="mistral_v3",
        description="Mistral 7B Instruct v0.3 (system in the final [INST], tools)",
        system_placement="final_user", user="[INST] {content}[/INST]",
        strip_roles=("assistant",),
        tool='[TOOL_RESULTS] {"content": {content}, "call_id": "{tool_call_id}"}[/TOOL_RESULTS]',
        tool_calls="mistral", tool_definitions="mistral", **_INST),
    # Mistral Small 3.x and later instruct models (the v7 / tekken format). The official
    # template puts a long dated default system prompt into conversations without one; xft
    # renders none (set the config's `system` to use Mistral's).
    ChatTemplate(
        name="mistral_v7", description="Mistral Small 3.2 / v7-tekken instruct "
                                       "([SYSTEM_PROMPT], tools)",
        user="[INST]{content}[/INST]",
        tool="[TOOL_RESULTS]{tool_call_id}[TOOL_CONTENT]{content}[/TOOL_RESULTS]",
        tool_calls="mistral_v7", tool_definitions="mistral_v7",
        **dict(_INST, system="[SYSTEM_PROMPT]{content}[/SYSTEM_PROMPT]", assistant_prefix="")),
    ChatTemplate(
        name="gemma", description="Gemma / Gemma 2 instruct (no system role; Gemma 2's template "
                                  "is Gemma's)",
        prefix="{bos_token}", user="<start_of_turn>user\n{content}<end_of_turn>\n",
        assistant_prefix="<start_of_turn>model\n", assistant_suffix="<end_of_turn>",
        turn_separator="\n", strip_roles=("user", "assistant"), alternate=True,
        stop_words=("<end_of_turn>",)),
    # Gemma 3: as Gemma's turns, but a system message is prepended (with a blank line) to the
    # first user message, whose own text alone is trimmed.
    ChatTemplate(
        name="gemma3", description="Gemma 3 instruct (the system prompt opens the first user "
                                   "turn)",
        prefix="{bos_token}", user="<start_of_turn>user\n{content}<end_of_turn>\n",
        system="{content}\n\n", system_placement="first_user", trim_user_before_merge=True,
        assistant_prefix="<start_of_turn>model\n", assistant_suffix="<end_of_turn>",
        turn_separator="\n", strip_roles=("user", "assistant"), alternate=True,
        stop_words=("<end_of_turn>",)),
    ChatTemplate(
        name="phi3", description="Phi-3 instruct (<|end|> turns, EOS closes a conversation)",
        system="<|system|>\n{content}<|end|>\n", user="<|user|>\n{content}<|end|>\n",
        assistant_prefix="<|assistant|>\n", assistant_suffix="<|end|>", turn_separator="\n",
        closing="{eos_token}", stop_words=("<|end|>",)),
    # Phi-4 (microsoft/phi-4): ChatML-like turns with <|im_sep|> after the role and no line
    # breaks. Its first released template put the assistant header inside the user turn; the
    # fixed one (reproduced here) writes it with the reply or as the generation prompt. Both
    # render the same text for conversations that alternate (tests/test_templates.py).
    ChatTemplate(
        name="phi4", description="Phi-4 (<|im_start|>role<|im_sep|> turns ended by <|im_end|>)",
        system="<|im_start|>system<|im_sep|>{content}<|im_end|>",
        user="<|im_start|>user<|im_sep|>{content}<|im_end|>",
        assistant_prefix="<|im_start|>assistant<|im_sep|>", assistant_suffix="<|im_end|>",
        stop_words=("<|im_end|>",)),
    ChatTemplate(
        name="deepseek_chat", description="DeepSeek LLM chat ('User: ... Assistant: ...')",
        prefix="{bos_token}", system="{content}\n\n", user="User: {content}\n\n",
        assistant_prefix="Assistant: ", assistant_suffix="{eos_token}",
        generation_prompt="Assistant:"),
    # DeepSeek-R1 and its distills. Its official template drops the thoughts of every reply,
    # the final one included, while its generation prompt opens a think block: trained that
    # way, a model would learn to answer without thinking. xft keeps the final reply's
    # thoughts (an empty block without them), so the prompt is a prefix of the trained text;
    # earlier replies are exactly the official ones (docs/templates.md).
    ChatTemplate(
        name="deepseek_r1", description="DeepSeek-R1 and R1-Distill (thinking; the final "
                                        "reply keeps its thoughts)",
        prefix="{bos_token}", system="{content}", user="<｜User｜>{content}",
        assistant_prefix="<｜Assistant｜>", assistant_suffix="{eos_token}",
        generation_prompt="<｜Assistant｜><think>\n", think=("<think>\n", "\n</think>\n\n"),
        stop_words=("<｜end▁of▁sentence｜>",)),
    # ChatGLM3's chat_template ends a reply with nothing (generation stops at the next role
    # token). Like ChatGLM3's own fine-tuning script, xft closes a conversation with EOS so the
    # model learns to stop; prompts (add_generation_prompt) are exactly the official ones.
    ChatTemplate(
        name="chatglm3", description="ChatGLM3 (role tokens; EOS closes a conversation)",
        prefix="[gMASK]sop", system="<|system|>\n {content}", user="<|user|>\n {content}",
        assistant_prefix="<|assistant|>\n ", assistant_suffix="",
        generation_prompt="<|assistant|>", closing="{eos_token}",
        stop_words=("<|user|>", "<|observation|>")),
    # GLM-4 (THUDM/glm-4-9b-chat): ChatGLM3's role tokens without the space after the line
    # break, '[gMASK]<sop>' in front. A reply ends with nothing; generation stops at the next
    # role token. As GLM-4's own fine-tuning script (finetune_demo/finetune.py) does, xft
    # trains the '<|user|>' that follows each reply and closes a conversation with one, so
    # the model learns to stop. The generation prompt is '<|assistant|>': the line break after
    # it is the model's (trained). Tools as GLM-4's own messages (its OpenAI server's mapping):
    # the definitions a system turn of their own before the system prompt, each call an
    # '<|assistant|>name\n{arguments}' message, each result an '<|observation|>' turn, whose
    # opening ends (and is trained with) the calls before it, as '<|user|>' ends a reply.
    ChatTemplate(
        name="glm4", description="GLM-4 chat (role tokens; <|user|> ends a reply; tools)",
        prefix="[gMASK]<sop>", system="<|system|>\n{content}", user="<|user|>\n{content}",
        assistant_prefix="<|assistant|>\n", assistant_suffix="",
        user_opening_ends_reply="<|user|>", generation_prompt="<|assistant|>",
        tool="<|observation|>\n{content}", tool_opening_ends_reply="<|observation|>",
        tool_calls="glm4", tool_definitions="glm4",
        closing="<|user|>", stop_words=("<|user|>", "<|observation|>")),
    ChatTemplate(
        name="zephyr", description="Zephyr (<|user|>/<|assistant|> turns ended by EOS)",
        system="<|system|>\n{content}{eos_token}\n", user="<|user|>\n{content}{eos_token}\n",
        assistant_prefix="<|assistant|>\n", assistant_suffix="{eos_token}",
        turn_separator="\n"),
    # MOSS-003 SFT's own tagged format (fnlp/moss-003-sft-data). The meta_instruction is the
    # system prompt, verbatim. Thoughts and commands, tags included, are the model's output and
    # trained; '<|MOSS|>: ' is the generation prompt. Parts that are "None" in the data are
    # not rendered (see docs/templates.md).
    ChatTemplate(
        name="moss", description="MOSS-003 (<|Human|>, <|Inner Thoughts|>, <|Commands|>, "
                                 "<|Results|>, <|MOSS|>)",
        system="{content}", user="<|Human|>: {content}<eoh>\n",
        reasoning="<|Inner Thoughts|>: {content}<eot>\n",
        assistant_prefix="<|MOSS|>: ", assistant_suffix="<eom>", turn_separator="\n",
        generation_prompt="<|MOSS|>:",  # as MOSS's own demo prompts: the space is the reply's
        tool="<|Results|>:\n{content}\n<eor>\n", tool_calls="moss",
        # Plain text in most tokenizers (several tokens), so a stop string, not a stop word.
        stop_strings=("<eom>",)),
]
