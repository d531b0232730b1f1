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

_CONTENT = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

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
VICUNA_V1 = _CONTENT + _BOS + (
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ render(messages[0]['content']) }}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{{ " + jinja_literal(VICUNA_V1_SYSTEM) + " }}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{ ' ' }}"  # sep after the system prompt
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT: ' }}{% generation %}{{ render(message['content']) }}{{ '</s>' }}{% endgeneration %}"  # sep2
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
    "{% generation %}"
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
