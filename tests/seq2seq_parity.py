"""What the encoder-decoder parity tests (test_transformer, test_t5, test_bart) share: the generation
settings compared with transformers, and both libraries' generate called the same way."""
import transformerkit as tk

GENERATION_SETTINGS = [
    dict(num_beams=1),
    dict(num_beams=4),
    dict(num_beams=3, length_penalty=0.6, no_repeat_ngram_size=2),
    dict(num_beams=4, early_stopping=True, length_penalty=2.0),
]


def generate_both(model, ref, ids, mask, *, eos: int, pad: int, start: int, max_new_tokens: int = 12, **settings):
    """(ours, theirs): greedy or beam tokens from the start token, transformers' forced tokens off."""
    ours = tk.generate(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                       **settings)
    theirs = ref.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                          eos_token_id=eos, pad_token_id=pad, decoder_start_token_id=start,
                          forced_bos_token_id=None, forced_eos_token_id=None, **settings)
    return ours, theirs
