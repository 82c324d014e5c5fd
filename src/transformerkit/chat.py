"""Chat with an instruction-tuned decoder: a conversation (messages) -> the model's prompt text, through the
chat template its tokenizer carries -> generated tokens up to the end-of-turn token -> the reply text.

`chat` is one turn; `Conversation` keeps the history for a multi-turn session (what `tkit chat` runs).
A model without a chat template (a base model) can still chat with `template=False`: the conversation is
then written as a plain transcript ("user: ...", "assistant:") for the model to continue.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import ConfigError, GenerationError
from .generation import GenerationConfig, TextStreamer, generate, generation_settings

DEFAULT_MAX_NEW_TOKENS = 256   # a reply, not generate()'s 64-token continuation


def plain_prompt(messages: list[dict]) -> str:
    """The conversation as a transcript for a model without a chat template to continue."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def chat_prompt(tokenizer, messages, template: bool = True) -> str:
    """The prompt text of a conversation that ends with the assistant's turn to speak. Messages that are
    not a non-empty list of {"role", "content"} dicts are a DataError (chat_template.check_messages)."""
    if not template:
        from .chat_template import check_messages  # imports jinja2 (0.2 s): only when chatting

        return plain_prompt(check_messages(messages))
    if tokenizer.chat_template is None:
        raise ConfigError("this tokenizer has no chat template, so the model was not trained to chat in a known "
                          "format; use template=False (tkit chat --no-template) to talk to it as a plain "
                          "transcript")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


@torch.inference_mode()
def chat(model, tokenizer, messages, config: GenerationConfig | None = None, *, template: bool = True,
         stream: bool = False, file=None, seed: int | None = None, **overrides) -> str:
    """The model's reply to a conversation (a list of {"role", "content"} dicts), as text.

    Settings as for `generate` (a `config` and/or keyword overrides: do_sample, temperature, top_p,
    max_new_tokens, ...); without a config, replies are up to 256 new tokens (or what is left of the
    context). Generation stops at the tokenizer's end-of-sequence token (SmolLM2: <|im_end|>).
    template=False: no chat template (see `plain_prompt`), stopping also at a new line that starts the
    user's turn. stream=True prints the reply as it comes (to `file`, default stdout). A conversation
    longer than the context is a GenerationError (truncate_prompt=True keeps its last tokens).
    """
    if not model.can_generate or model.is_encoder_decoder:
        raise GenerationError(f"{type(model).__name__} is not a decoder-only language model; chat needs one "
                              "(e.g. tk.load('smollm2-135m-instruct'))")
    prompt = chat_prompt(tokenizer, messages, template)
    # The template writes every special token itself (a BOS too where the model wants one).
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if config is None and "max_new_tokens" not in overrides:   # a reply, up to what is left of the context
        room = (model.decoder_context or len(ids) + DEFAULT_MAX_NEW_TOKENS) - len(ids)
        overrides["max_new_tokens"] = max(1, min(DEFAULT_MAX_NEW_TOKENS, room))
    base = generation_settings(model, config)
    defaults = {name: value for name, value in (("eos_token_id", tokenizer.eos_token_id),
                                                ("pad_token_id", tokenizer.pad_token_id))
                if getattr(base, name) is None and value is not None}
    if not template:
        overrides.setdefault("stop_strings", ["\nuser:"])
    settings = base.replace(**{**defaults, **overrides})
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    streamer = TextStreamer(tokenizer, file, skip_special_tokens=True) if stream else None
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    out = generate(model, input_ids, config=settings, tokenizer=tokenizer, streamer=streamer, generator=generator)
    new = out[0, input_ids.shape[1]:].tolist()
    eos = set(settings.eos_ids)
    end = next((i for i, t in enumerate(new) if t in eos), len(new))
    reply = tokenizer.decode(new[:end], skip_special_tokens=True)
    if not template and "\nuser:" in reply:
        reply = reply[:reply.index("\nuser:")]
    if streamer is not None:
        streamer.end()
    return reply.strip()


@dataclass
class Conversation:
    """A multi-turn chat: the messages so far, and the system prompt that `reset` keeps."""
    system: str | None = None
    messages: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, model, tokenizer, text: str, **settings) -> str:
        """Add the user's turn, get the reply (`chat`'s settings), add it too, and return it. A turn that
        fails (e.g. the conversation outgrew the context) leaves the history as it was."""
        turn = [*self.messages, {"role": "user", "content": text}]
        reply = chat(model, tokenizer, turn, **settings)
        self.messages = [*turn, {"role": "assistant", "content": reply}]
        return reply
