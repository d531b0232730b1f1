"""Chat templates for the assembled processor.

Why our own: TRL renders multimodal messages whose `content` is a list of parts
({"type": "image"} / {"type": "text"}); the LLM's template (SmolLM2's ChatML) only knows strings,
and Vicuna ships none. Every template accepts string content too, and wraps assistant turns in
`{% generation %}` so stage 2 can train on assistant tokens only (TRL `assistant_only_loss`),
end-of-turn token included (the model must learn to stop).

The LLaVA-1.5 formats are LLaVA's own (llava/conversation.py, llava/train/train.py):
- `plain` (stage 1, `conv_llava_plain` + `preprocess_plain`): `<image>` + caption + `\\n`; no system
  prompt, and the instruction is dropped (LLaVA replaces the human turn by `<image>`).
- `vicuna_v1` (stage 2, `conv_vicuna_v1`, SeparatorStyle.TWO, sep " ", sep2 "</s>"):
  `SYSTEM USER: <image>\\nQ ASSISTANT: A</s>USER: Q2 ASSISTANT: A2</s>`.
Both start with the tokenizer's BOS, as LLaVA's sequences do (it tokenizes with the tokenizer's
default special tokens; TRL tokenizes rendered text with `add_special_tokens=False`, so the BOS
must come from the template, and every caller tokenizes rendered text without special tokens).
What must equal LLaVA's is the token ids, not the text: the rendered text has a space after BOS
and after `<image>` (and before a plain caption), which a Llama tokenizer turns into the `▁` that
LLaVA's chunked tokenization produces there (`_BOS_SP`); the tests compare the ids with LLaVA's
`tokenizer_image_token` and its label masks with `preprocess_plain` / `preprocess_v1`.

Text is never pasted into Jinja source: `jinja_literal` writes it as an escaped string literal.
"""

from __future__ import annotations

import json


def jinja_literal(text: str) -> str:
    """`text` as a Jinja string literal that renders back to exactly `text` (quotes, apostrophes,
    braces, newlines, non-ASCII). Jinja reads string literals with Python's backslash escapes, which
    JSON's escaping is a subset of."""
    return json.dumps(text, ensure_ascii=True)


_BOS = "{%- if bos_token -%}{{ bos_token }}{%- endif -%}"
# LLaVA tokenizes the text between special tokens as fresh SentencePiece strings (`tokenizer_image_token`
# splits at `<image>`; the first chunk starts after BOS), so each begins with the `▁` word marker: `▁A chat`,
# `▁` + `\n` after the image. A Llama tokenizer with `legacy=False` adds no marker after a special token in
# one rendered string; a literal space there gives the same `▁`, so the ids are LLaVA's exactly.
_BOS_SP = "{%- if bos_token -%}{{ bos_token }}{{ ' ' }}{%- endif -%}"


def _content_macro(image: str) -> str:
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{ content" + (" | replace('<image>\\n', " + jinja_literal(image) + ")"
                                                  if image != "<image>\n" else "") + " }}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' -%}{{ " + jinja_literal(image) + " }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
    )


_CONTENT = _content_macro("<image>\n")
_CONTENT_SP = _content_macro("<image> \n")  # LLaVA's `<image>\n` as a Llama tokenizer must see it (above)

# ChatML, as SmolLM2-Instruct was trained on (without its default "You are SmolLM" system turn).
CHATML = _CONTENT + (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ render(message['content']) }}{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}{{ render(message['content']) }}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# LLaVA's `conv_vicuna_v1` (llava/conversation.py): SeparatorStyle.TWO, sep " ", sep2 "</s>".
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1 = _CONTENT_SP + _BOS_SP + (
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ render(messages[0]['content']) }}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{{ " + jinja_literal(VICUNA_V1_SYSTEM) + " }}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{ ' ' }}"  # sep after the system prompt
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    # sep2 "</s>"; the space after "ASSISTANT:" is trained, as LLaVA's mask trains the token it becomes
    "{{ 'ASSISTANT:' }}{% generation %}{{ ' ' }}{{ render(message['content']) }}{{ '</s>' }}{% endgeneration %}"
    "{%- else -%}{{ 'USER: ' }}{{ render(message['content']) }}{{ ' ' }}{%- endif -%}"  # sep
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# LLaVA's `conv_llava_plain` as `preprocess_plain` uses it: one image + caption exchange, the human
# turn replaced by `<image>`, the caption followed by sep "\n". More turns are refused, as LLaVA
# asserts `len(source) == 2`.
PLAIN = _BOS + (
    "{%- set turns = messages | rejectattr('role', 'equalto', 'system') | list -%}"
    "{%- if turns | length > 2 -%}"
    "{{ raise_exception('the plain template (LLaVA stage 1) renders one image + caption exchange, got ' "
    "~ (turns | length) ~ ' turns') }}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ ' ' }}"  # the caption is a fresh SentencePiece string in LLaVA: `▁` first, trained
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '\\n' }}{% endgeneration %}"
    "{%- elif message['content'] is string -%}{%- if '<image>' in message['content'] -%}{{ '<image>' }}{%- endif -%}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

TEMPLATES = {"chatml": CHATML, "vicuna_v1": VICUNA_V1, "plain": PLAIN}

# Stage 2 trains on conversations; `plain` has no roles to tell instruction from answer.
STAGE1_ONLY = frozenset({"plain"})


def chat_template(name: str) -> str:
    return TEMPLATES[name]


def set_chat_template(processor, name: str) -> None:
    """Give a processor (and its tokenizer) the named template: a stage's format, saved with its model."""
    template = chat_template(name)
    processor.chat_template = template
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.chat_template = template
