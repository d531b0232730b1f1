"""Chat templates for the assembled processor.

Why our own: TRL renders multimodal messages whose `content` is a list of parts
({"type": "image"} / {"type": "text"}); the LLM's template (SmolLM2's ChatML) only knows strings,
and Vicuna ships none. Both templates render an image part as LLaVA's `<image>\n`, accept string
content too, and wrap assistant turns in `{% generation %}` so stage 2 can train on assistant
tokens only (TRL `assistant_only_loss`), end-of-turn token included (the model must learn to stop).
"""

from __future__ import annotations

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
VICUNA_V1 = _CONTENT + (
    "{%- if messages[0]['role'] == 'system' -%}{{ render(messages[0]['content']) }}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{{ '" + VICUNA_V1_SYSTEM + "' }}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ ' ASSISTANT: ' }}{% generation %}{{ render(message['content']) }}{{ '</s>' }}{% endgeneration %}"
    "{%- else -%}{{ ' USER: ' }}{{ render(message['content']) }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' }}{%- endif -%}"
)

TEMPLATES = {"chatml": CHATML, "vicuna_v1": VICUNA_V1}


def chat_template(name: str) -> str:
    return TEMPLATES[name]
