"""Chat templates: the Jinja2 template an instruction-tuned model ships to turn messages into its prompt text.

Rendered the way ``transformers`` renders them (``utils/chat_template_utils.py``), so both libraries build
the same prompt from the same messages: a sandboxed, immutable Jinja2 environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension (``{% break %}``), ``raise_exception(message)``, a
``tojson`` filter that keeps non-ASCII text and takes ``indent`` / ``sort_keys``, ``strftime_now(format)``,
and a ``{% generation %}`` block that renders its body. The template sees ``messages``,
``add_generation_prompt``, ``tools`` and ``documents`` (None unless given), the tokenizer's special tokens
(``bos_token``, ``eos_token``, ...) and any other keyword given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from transformerkit.errors import ConfigError, DataError

_MESSAGE_SHAPE = 'a list of {"role": "system" | "user" | "assistant" | ..., "content": "text"} dicts'
# transformers copies a message's reasoning under every one of these names, since templates read different ones.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def render_chat_template(
    template: str,
    messages: Any,
    *,
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """The prompt text of ``messages`` under ``template``; ``kwargs`` override ``special_tokens`` of the same name."""
    chat = check_messages(messages)
    variables = _plain({**(special_tokens or {}), **kwargs})
    tools, documents = variables.pop("tools", None), variables.pop("documents", None)
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"The chat template is not valid Jinja2: {e.message} (template line {e.lineno}). "
                          "Fix the template, or load a tokenizer whose template works.") from e
    try:
        return compiled.render(messages=chat, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.TemplateError as e:   # raise_exception(...) in the template, an undefined value, the sandbox
        raise DataError(f"The chat template cannot render these messages: {e}. Change the conversation "
                        "to what the template accepts (e.g. user and assistant turns alternating).") from e


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """A plain copy of a conversation, refusing anything but a non-empty list of {"role", "content"} dicts.

    As transformers does, keys whose value is None are dropped (an API's ``"content": None`` beside
    ``tool_calls``), and a message's reasoning is copied under each name templates read it by.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, (list, tuple)):
        raise DataError(f"messages is a {type(messages).__name__}; pass {_MESSAGE_SHAPE}, "
                        'e.g. [{"role": "user", "content": "Hi"}].')
    if not messages:
        raise DataError(f"messages is empty; pass at least one message: {_MESSAGE_SHAPE}.")
    chat = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise DataError(f"messages[{index}] is {message!r}, not a dict; pass {_MESSAGE_SHAPE}.")
        if not isinstance(message.get("role"), str):
            raise DataError(f"messages[{index}] is {message!r}: it needs a 'role' string; pass {_MESSAGE_SHAPE}.")
        content = message.get("content")
        # A message may carry tool calls instead of text; otherwise text, or a list of content blocks.
        if not isinstance(content, (str, list, tuple)) and not (content is None and message.get("tool_calls")):
            raise DataError(f"messages[{index}] is {message!r}: its 'content' must be a string "
                            f"(or a list of content blocks); pass {_MESSAGE_SHAPE}.")
        plain = {key: _plain(value) for key, value in message.items() if value is not None}
        reasoning = next((plain[key] for key in _REASONING_FIELDS if key in plain), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        chat.append(plain)
    return chat


def _plain(value: Any) -> Any:
    """``value`` rebuilt from JSON types only, so a template cannot reach the methods of the caller's objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for kind, base in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
        if isinstance(value, kind):   # a subclass (an enum, a numpy scalar) loses its extra methods
            return base(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return f"<{type(value).__name__}>"   # as transformers: an inert placeholder naming the type


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, '), which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _Generation(Extension):
    """``{% generation %}...{% endgeneration %}`` (marks the assistant's tokens for training): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names, as transformers' does (no reaching CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:   # Jinja's signature trick: namespace(self=...) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template may not set the namespace attribute {name!r}")


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env.from_string(template)
