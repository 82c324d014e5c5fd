"""Screenshots of the page of `tkit serve` for docs/serving.md: SmolLM2-135M-Instruct served on a free loopback
port, Debian's Chromium driven by Playwright.

    .venv/bin/python docs/make_screenshots.py [--out docs/img]

Writes serve-chat.png (a real streamed reply), serve-attention.png (a middle layer and head of a short
sentence, with the causal mask) and serve-positions.png (the rotary table and its frequencies).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))          # live_server: uvicorn in a thread on a free port

import transformerkit as tk  # noqa: E402
from live_server import running  # noqa: E402
from transformerkit.serving import create_app  # noqa: E402

MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"
SENTENCE = "The cat sat on the mat because it was tired."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--head", type=int, default=4)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Debian's chromium is needed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    app = create_app(tk.load(MODEL).eval(), tk.load_tokenizer(MODEL), MODEL)
    with running(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 640})
        page.set_default_timeout(180_000)
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('model-name').textContent !== '…'")

        page.fill("#chat-temperature", "0")            # greedy: the same picture every run
        page.fill("#chat-max-tokens", "64")
        page.fill("#chat-input", QUESTION)
        start = time.perf_counter()
        page.click("#chat-send")
        page.wait_for_selector(".msg.assistant[data-done]")
        print(f"reply in {time.perf_counter() - start:.1f} s: {page.inner_text('.msg.assistant .text')!r}")
        page.screenshot(path=str(args.out / "serve-chat.png"))

        page.set_viewport_size({"width": 1280, "height": 820})
        page.click("#tab-attention")
        page.fill("#attn-text", SENTENCE)
        page.select_option("#attn-layer", str(args.layer))
        page.select_option("#attn-head", str(args.head))
        page.wait_for_selector(f'#attn-canvas[data-shown="self/{args.layer}/{args.head}"]')
        page.hover("#attn-canvas", position={"x": 160, "y": 260})      # a value in the hover line
        page.screenshot(path=str(args.out / "serve-attention.png"), full_page=True)

        page.click("#tab-positions")
        page.wait_for_selector("#pos-canvas[data-kind]")
        page.screenshot(path=str(args.out / "serve-positions.png"), full_page=True)
        browser.close()
    for name in ("serve-chat.png", "serve-attention.png", "serve-positions.png"):
        print(args.out / name, f"{(args.out / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
