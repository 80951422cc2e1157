"""Chat messages -> prompt token ids in the model's prompt template (`janus_jax.prompts.TEMPLATES`).

A single system + user exchange is exactly `prompts.render_prompt_ids`, the prompt used in training
(and, for `[INST]`, in the paper's inference code). Earlier assistant turns continue as training writes a
response (`[INST] ... [/INST]{reply}</s>`, then the next `[INST] ... [/INST]`):
`prompts.render_conversation_ids`.
"""

from __future__ import annotations

from typing import Any

from janus_jax.prompts import render_conversation_ids
from janus_jax.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")


class MessageError(ValueError):
    """A malformed message list; the text names the offending message."""


def message_text(message: Any, index: int) -> tuple[str, str]:
    """(role, text) of one OpenAI chat message; content may be a string or a list of text parts."""
    if not isinstance(message, dict):
        raise MessageError(f"messages[{index}] must be an object with 'role' and 'content'")
    role = message.get("role")
    if role not in ROLES:
        raise MessageError(f"messages[{index}].role={role!r} is not supported; use one of {list(ROLES)}")
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise MessageError(
                    f"messages[{index}].content[{j}] must be a text part {{'type': 'text', 'text': ...}}"
                )
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise MessageError(f"messages[{index}].content must be a string or a list of text parts")
    return role, content


def render_chat_ids(tok: Tokenizer, messages: Any, template: str = "mistral_inst") -> list[int]:
    """Prompt ids for a conversation that ends with a user message.

    System messages (any number, joined by newlines) go in front of the first user turn, as the
    Janus template puts the system message before the instruction.
    """
    if not isinstance(messages, list) or not messages:
        raise MessageError("messages must be a non-empty list")
    turns = [message_text(m, i) for i, m in enumerate(messages)]
    system = "\n".join(text for role, text in turns if role == "system")
    dialogue = [(role, text) for role, text in turns if role != "system"]
    if not dialogue or dialogue[-1][0] != "user":
        raise MessageError("the last non-system message must have role 'user'")
    for k, (role, _) in enumerate(dialogue):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise MessageError(f"user and assistant messages must alternate, starting with user (turn {k} is {role})")
    return render_conversation_ids(tok, system, [text for _, text in dialogue], template)
