"""The command line: every command's --help, the main flow (train -> generate -> transformers loads
it), and user errors printed as one line without a traceback and a non-zero exit."""
import subprocess
import sys

import pytest
import torch

import transformerkit as tk
from transformerkit.cli import build_parser, main
from transformerkit.tokenization import char_tokenizer

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture
def char_checkpoint(tmp_path):
    """A tiny random GPT with a character tokenizer, saved as a checkpoint folder."""
    tok = char_tokenizer(TEXT)
    model = tk.build("gpt2-tiny", vocab_size=tok.vocab_size, max_position=64)
    directory = tmp_path / "ckpt"
    model.save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.mark.parametrize("command", [[], ["train"], ["generate"], ["convert"], ["info"], ["data"],
                                     ["data", "list"], ["data", "fetch"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: tkit" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "transformerkit.cli", "info", "gpt2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "124,439,808" in result.stdout


def test_info_on_a_checkpoint(char_checkpoint, capsys):
    assert main(["info", str(char_checkpoint)]) == 0
    n = tk.load(char_checkpoint).num_parameters()
    assert f"{n:,}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["info", "gpt9"], "unknown preset 'gpt9'"),
    (["data", "fetch", "no-such-asset"], "Unknown asset 'no-such-asset'"),
    (["generate", "/no/such/folder"], "no checkpoint folder"),
])
def test_user_errors_are_one_line(argv, fragment, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and err.startswith("tkit: error:")


def test_errors_in_a_subprocess_have_no_traceback():
    result = subprocess.run([sys.executable, "-m", "transformerkit.cli", "info", "gpt9"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "unknown preset" in result.stderr


def test_generate_greedy_matches_library(char_checkpoint, capsys):
    assert main(["generate", str(char_checkpoint), "--prompt", "Line 1", "--greedy",
                 "--max-new-tokens", "12", "--no-stream"]) == 0
    printed = capsys.readouterr().out
    model, tok = tk.load(char_checkpoint), tk.load_tokenizer(char_checkpoint)
    ids = torch.tensor([tok.encode("Line 1")])
    expected = tok.decode(tk.generate(model, ids, max_new_tokens=12)[0].tolist())
    assert printed.strip("\n") == expected.strip("\n")


def test_generate_streams_the_same_text(char_checkpoint, capsys):
    assert main(["generate", str(char_checkpoint), "--prompt", "Line", "--greedy", "--max-new-tokens", "10"]) == 0
    streamed = capsys.readouterr().out
    assert main(["generate", str(char_checkpoint), "--prompt", "Line", "--greedy", "--max-new-tokens", "10",
                 "--no-stream"]) == 0
    assert capsys.readouterr().out.strip("\n") == streamed.strip("\n")
    assert len(streamed.strip("\n")) > len("Line")


def test_prompt_longer_than_context(char_checkpoint, capsys):
    long_prompt = "x" * 80           # the model's context is 64
    assert main(["generate", str(char_checkpoint), "--prompt", long_prompt, "--max-new-tokens", "5"]) == 1
    assert "exceeds the model's context of 64" in capsys.readouterr().err
    assert main(["generate", str(char_checkpoint), "--prompt", long_prompt, "--max-new-tokens", "5",
                 "--truncate", "--greedy", "--no-stream"]) == 0


def test_convert_roundtrip(char_checkpoint, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", str(char_checkpoint), str(out), "--dtype", "bf16"]) == 0
    converted, original = tk.load(out), tk.load(char_checkpoint)
    assert next(converted.parameters()).dtype == torch.float32   # loads into our fp32 model
    ids = torch.tensor([[3, 4, 5]])
    assert torch.allclose(converted(ids).logits, original(ids).logits, atol=0.1)
    assert not torch.equal(converted(ids).logits, original(ids).logits)   # it really went through bf16
    assert (out / "tokenizer.json").exists()


def test_train_then_generate_then_transformers_loads(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "gpt2-tiny", "--data", str(corpus), "--tokenizer", "char",
            "--set", "n_layer=1", "d_model=32", "n_head=2", "d_ff=64",
            "--block-size", "32", "--batch-size", "8", "--max-steps", "30", "--eval-interval", "30",
            "--eval-batches", "2", "--log-interval", "10", "--warmup-steps", "5", "--lr", "3e-3",
            "--out", str(run), "--prompt", "Line", "--sample-tokens", "20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation loss:" in out and "sample:\nLine" in out
    assert (run / "metrics.jsonl").exists() and (run / "checkpoint" / "model.safetensors").exists()

    assert main(["generate", str(run), "--prompt", "Line", "--greedy", "--max-new-tokens", "8", "--no-stream"]) == 0
    ours_text = capsys.readouterr().out.strip("\n")

    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(run / "checkpoint").eval()
    tok = tk.load_tokenizer(run / "checkpoint")
    ids = torch.tensor([tok.encode("Line")])
    hf_ids = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert tok.decode(hf_ids[0].tolist()) == ours_text


def test_train_on_an_empty_file_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train", "--data", str(empty), "--tokenizer", "char", "--out", str(tmp_path / "r")]) == 1
    assert "empty" in capsys.readouterr().err


def test_bad_set_value(capsys, corpus, tmp_path):
    assert main(["train", "--data", str(corpus), "--tokenizer", "char", "--set", "n_layer",
                 "--out", str(tmp_path / "r")]) == 1
    assert "FIELD=VALUE" in capsys.readouterr().err


def test_generation_slides_past_the_context(char_checkpoint, capsys):
    """The checkpoint's context is 64 positions; 150 new characters need the sliding window."""
    from transformerkit.generation import generate_text

    model, tok = tk.load(char_checkpoint), tk.load_tokenizer(char_checkpoint)
    text = generate_text(model, tok, "Line 7", max_new_tokens=150)[0]
    assert len(tok.encode(text)) == 150
    first = generate_text(model, tok, "Line 7", max_new_tokens=40)[0]
    assert text.startswith(first)            # the first round is plain greedy decoding
    assert main(["generate", str(char_checkpoint), "--prompt", "Line", "--max-new-tokens", "150", "--seed", "0"]) == 0
    assert len(capsys.readouterr().out.strip("\n")) > 100


def test_stop_strings_cut_the_text(char_checkpoint):
    from transformerkit.generation import generate_text

    model, tok = tk.load(char_checkpoint), tk.load_tokenizer(char_checkpoint)
    full = generate_text(model, tok, "Line", max_new_tokens=60)[0]
    stop = full[10:12]
    cut = generate_text(model, tok, "Line", max_new_tokens=60, stop_strings=[stop])[0]
    assert cut.endswith(stop) and full.startswith(cut) and len(cut) <= 12 + len(stop)
