// The page of `tkit serve`: a chat playground (the OpenAI-compatible /v1 API, streamed), an attention
// explorer (/api/attention) and the model's positional encoding (/api/positions). Plain JS, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, history: [], transcript: "", streaming: null, attn: null };

// --- requests -------------------------------------------------------------------------------------

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = sessionStorage.getItem("tkit-api-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// The message of an OpenAI-shaped error body, or the status line when the body is something else.
async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

async function getJSON(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorOf(response));
  return response.json();
}

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

// --- tabs -----------------------------------------------------------------------------------------

const loaded = {};
function showView(view) {
  for (const tab of document.querySelectorAll("nav button")) {
    const on = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(on));
    $("view-" + tab.dataset.view).hidden = !on;
  }
  showError("");
  if (!loaded[view] && state.info) {      // draw each view once it is first shown
    loaded[view] = true;
    if (view === "attention") runAttention();
    if (view === "positions") loadPositions();
  }
}

// --- colours and heat maps ------------------------------------------------------------------------

const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
  [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
const RDBU = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];

function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}

// values: rows of numbers. opts: rowLabels, colLabels, rowTitle, colTitle, colour(v) -> [r, g, b],
// legend: [[text, [r, g, b]], ...] or a colour bar {min, max}, maxWidth/maxHeight of the cells' area.
// Remembers its geometry on the canvas so hovering can find the cell.
function drawHeatmap(canvas, values, opts) {
  const T = values.length, K = T ? values[0].length : 0;
  const ctx = canvas.getContext("2d");
  const font = "11px system-ui, sans-serif";
  ctx.font = font;
  const cellW = Math.max(1, Math.min(opts.maxCell || 30, Math.floor((opts.maxWidth || 480) / Math.max(K, 1))));
  const cellH = Math.max(1, Math.min(opts.maxCell || 30, Math.floor((opts.maxHeight || 480) / Math.max(T, 1))));
  const stride = (labels, cell) => Math.max(1, Math.ceil(13 / cell));
  const width = (labels) => labels ? Math.min(96, Math.max(...labels.map((s) => ctx.measureText(s).width))) : 0;
  ctx.font = font;
  const rowTitleWidth = opts.rowTitle ? ctx.measureText(opts.rowTitle + " ↓").width + 12 : 0;
  const left = Math.ceil(Math.max(rowTitleWidth, width(opts.rowLabels) + 12)), top = Math.ceil(28 + width(opts.colLabels));
  const barW = opts.bar ? 70 : 0;
  const w = left + K * cellW + 10 + barW, h = top + T * cellH + (opts.legend ? 30 : 10);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.ceil(w * dpr); canvas.height = Math.ceil(h * dpr);
  canvas.style.width = w + "px"; canvas.style.height = h + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);

  for (let r = 0; r < T; r++) {
    for (let c = 0; c < K; c++) {
      const [R, G, B] = opts.colour(values[r][c], r, c);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(left + c * cellW, top + r * cellH, cellW, cellH);
    }
  }
  ctx.fillStyle = "#1d2330"; ctx.font = font;
  const clip = (s) => { while (s.length > 1 && ctx.measureText(s).width > 96) s = s.slice(0, -2) + "…"; return s; };
  if (opts.rowLabels) {
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const k = stride(opts.rowLabels, cellH);
    opts.rowLabels.forEach((s, r) => { if (r % k === 0) ctx.fillText(clip(s), left - 5, top + (r + 0.5) * cellH); });
  }
  if (opts.colLabels) {
    const k = stride(opts.colLabels, cellW);
    ctx.textAlign = "left"; ctx.textBaseline = "middle";
    opts.colLabels.forEach((s, c) => {
      if (c % k) return;
      ctx.save(); ctx.translate(left + (c + 0.5) * cellW, top - 5); ctx.rotate(-Math.PI / 2);
      ctx.fillText(clip(s), 0, 0); ctx.restore();
    });
  }
  ctx.fillStyle = "#5f6b7a"; ctx.textAlign = "left"; ctx.textBaseline = "top";
  if (opts.colTitle) ctx.fillText(opts.colTitle + " →", left, 4);
  if (opts.rowTitle) {        // in the free corner above the row labels
    ctx.textAlign = "right"; ctx.textBaseline = "bottom";
    ctx.fillText(opts.rowTitle + " ↓", left - 5, top - 4);
  }
  if (opts.bar) {           // a colour bar from min (bottom) to max (top)
    const x = left + K * cellW + 14, hh = Math.max(60, Math.min(T * cellH, 240));
    for (let y = 0; y < hh; y++) {
      const [R, G, B] = opts.colour(opts.bar.max - (y / (hh - 1)) * (opts.bar.max - opts.bar.min));
      ctx.fillStyle = `rgb(${R},${G},${B})`; ctx.fillRect(x, top + y, 12, 1);
    }
    ctx.fillStyle = "#1d2330"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    ctx.fillText(fmt(opts.bar.max), x + 16, top + 4); ctx.fillText(fmt(opts.bar.min), x + 16, top + hh - 4);
  }
  if (opts.legend) {
    let x = left;
    ctx.textAlign = "left"; ctx.textBaseline = "middle";
    for (const [text, [R, G, B]] of opts.legend) {
      ctx.fillStyle = `rgb(${R},${G},${B})`; ctx.fillRect(x, h - 20, 12, 12);
      ctx.strokeStyle = "#aab"; ctx.strokeRect(x, h - 20, 12, 12);
      ctx.fillStyle = "#1d2330"; ctx.fillText(text, x + 16, h - 14);
      x += 22 + ctx.measureText(text).width + 12;
    }
  }
  canvas._grid = { left, top, cellW, cellH, T, K, values, rowLabels: opts.rowLabels, colLabels: opts.colLabels };
}

const fmt = (v) => (Math.abs(v) >= 100 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3));

// What cell of a heat map the mouse is over, or null.
function cellAt(canvas, event) {
  const g = canvas._grid;
  if (!g) return null;
  const box = canvas.getBoundingClientRect();
  const c = Math.floor((event.clientX - box.left - g.left) / g.cellW);
  const r = Math.floor((event.clientY - box.top - g.top) / g.cellH);
  return r >= 0 && r < g.T && c >= 0 && c < g.K ? { r, c, v: g.values[r][c], g } : null;
}

// --- info -----------------------------------------------------------------------------------------

async function loadInfo() {
  try {
    state.info = await getJSON("/api/info");
  } catch (e) {
    showError(String(e.message || e) + (String(e.message).startsWith("401") ? " (enter the API key above)" : ""));
    return;
  }
  const info = state.info;
  $("model-name").textContent = info.name;
  document.title = `${info.name} · transformerkit serve`;
  const layers = info.is_encoder_decoder ? `${info.n_layer}+${info.n_decoder_layer} layers` : `${info.n_layer} layers`;
  $("model-summary").textContent = `${info.family}, ${info.is_encoder_decoder ? "encoder-decoder" : "one stack"}, ` +
    `${layers}, ${info.n_head} heads, d_model ${info.d_model}, ${info.positions} positions`;
  $("chat-mode").textContent = !info.can_generate ? "This model does not generate text (an encoder): chat is off."
    : info.can_chat ? "Chat through the model's chat template (/v1/chat/completions, streamed)."
      : "No chat template: the box is a prompt the model continues (/v1/completions, streamed); " +
        "the conversation so far is part of the next prompt.";
  $("chat-send").disabled = !info.can_generate;
  $("attn-target-label").hidden = !info.is_encoder_decoder;
  const kinds = info.is_encoder_decoder
    ? [["encoder", "encoder (bidirectional)"], ["self", "decoder (masked)"], ["cross", "cross (decoder → source)"]]
    : [["self", info.family === "bert" ? "self (bidirectional)" : "self (masked)"]];
  $("attn-kind").replaceChildren(...kinds.map(([v, t]) => new Option(t, v)));
  fillLayers();
  const visible = document.querySelector('nav button[aria-selected="true"]').dataset.view;
  showView(visible);
}

function fillLayers() {
  const info = state.info, kind = $("attn-kind").value;
  const n = kind === "encoder" || !info.is_encoder_decoder ? info.n_layer : info.n_decoder_layer;
  const keep = Math.min(Number($("attn-layer").value || Math.floor(n / 2)), n - 1);
  $("attn-layer").replaceChildren(...Array.from({ length: n }, (_, i) => new Option(String(i), String(i))));
  $("attn-layer").value = String(keep);
  if (!$("attn-head").options.length) {
    $("attn-head").replaceChildren(...Array.from({ length: info.n_head }, (_, i) => new Option(String(i), String(i))));
  }
}

// --- chat -----------------------------------------------------------------------------------------

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who"; who.textContent = role === "user" ? "you" : state.info ? state.info.name : "model";
  const body = document.createElement("span");
  body.className = "text"; body.textContent = text;
  el.append(who, body);
  $("chat-log").append(el);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return el;
}

// Reads an OpenAI server-sent-event stream ("data: {json}" lines, "data: [DONE]" last) and calls onDelta
// with each piece of text as it arrives.
async function readStream(response, pick, onDelta) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the server stopped the stream");
      const text = pick(chunk);
      if (text) onDelta(text);
    }
  }
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value;
  if (!text.trim() || state.streaming || !state.info) return;
  showError("");
  const info = state.info;
  const common = { model: info.name, stream: true, max_tokens: Number($("chat-max-tokens").value) || 128,
                   temperature: Number($("chat-temperature").value) };
  let path, body, pick;
  if (info.can_chat) {
    state.history.push({ role: "user", content: text });
    path = "/v1/chat/completions";
    body = { ...common, messages: state.history };
    pick = (c) => c.choices && c.choices[0] && c.choices[0].delta && c.choices[0].delta.content;
  } else {
    state.transcript += text;
    path = "/v1/completions";
    body = { ...common, prompt: state.transcript };
    pick = (c) => c.choices && c.choices[0] && c.choices[0].text;
  }
  addMessage("user", text);
  $("chat-input").value = "";
  const reply = addMessage("assistant", "");
  reply.classList.add("streaming");
  reply.dataset.updates = "0";
  const out = reply.querySelector(".text");
  let answer = "";
  state.streaming = new AbortController();
  $("chat-send").disabled = true;
  $("chat-status").textContent = "writing…";
  try {
    const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body),
                                         signal: state.streaming.signal });
    if (!response.ok) throw new Error(await errorOf(response));
    await readStream(response, pick, (delta) => {
      answer += delta;
      out.textContent = answer;
      reply.dataset.updates = String(Number(reply.dataset.updates) + 1);
      $("chat-log").scrollTop = $("chat-log").scrollHeight;
    });
    if (info.can_chat) state.history.push({ role: "assistant", content: answer });
    else state.transcript += answer;
    $("chat-status").textContent = "";
  } catch (e) {
    if (e.name !== "AbortError") {
      showError("chat: " + (e.message || e));
      if (info.can_chat) state.history.pop();                 // the turn did not happen
      else state.transcript = state.transcript.slice(0, -text.length);
    }
    $("chat-status").textContent = "";
  } finally {
    reply.classList.remove("streaming");
    reply.dataset.done = "1";
    state.streaming = null;
    $("chat-send").disabled = !info.can_generate;
  }
}

function clearChat() {
  if (state.streaming) state.streaming.abort();
  state.history = []; state.transcript = "";
  $("chat-log").replaceChildren();
  showError("");
}

// --- attention ------------------------------------------------------------------------------------

const MASK_ON = [36, 86, 166], MASK_OFF = [226, 229, 235];
let attnTicket = 0;

async function runAttention(event) {
  if (event) event.preventDefault();
  if (!state.info) return;
  const request = { text: $("attn-text").value, target: $("attn-target").value || null,
                    kind: $("attn-kind").value, layer: Number($("attn-layer").value),
                    head: Number($("attn-head").value) };
  $("attn-status").textContent = "computing…";
  const ticket = ++attnTicket;       // a slower, older answer must not overwrite a newer one
  let a;
  try {
    a = await getJSON("/api/attention", request);
  } catch (e) {
    if (ticket !== attnTicket) return;
    $("attn-status").textContent = "";
    showError("attention: " + (e.message || e));
    return;
  }
  if (ticket !== attnTicket) return;
  showError("");
  $("attn-status").textContent = "";
  state.attn = a;
  const tokens = $("attn-tokens");
  tokens.replaceChildren(...a.key_tokens.map((t) => Object.assign(document.createElement("span"), { textContent: t })));
  tokens.prepend(`${a.key_tokens.length} key tokens${a.kind === "self" && !state.info.is_encoder_decoder ? "" :
    `, ${a.tokens.length} query tokens`}: `);
  const max = Math.max(1e-9, ...a.weights.flat());
  const common = { rowLabels: a.tokens, colLabels: a.key_tokens, rowTitle: "queries", colTitle: "keys",
                   maxWidth: 440, maxHeight: 440 };
  drawHeatmap($("attn-canvas"), a.weights, { ...common, colour: (v) => ramp(VIRIDIS, v / max),
                                             bar: { min: 0, max } });
  drawHeatmap($("mask-canvas"), a.mask, { ...common, colour: (v) => (v ? MASK_ON : MASK_OFF),
                                          legend: [["may attend (1)", MASK_ON], ["masked (0, −∞ before softmax)", MASK_OFF]] });
  const what = { self: state.info.is_encoder_decoder ? "decoder self-attention" : "self-attention",
                 encoder: "encoder self-attention", cross: "cross-attention" }[a.kind];
  $("attn-caption").textContent = `${what}, layer ${a.layer} of ${a.n_layer}, head ${a.head} of ${a.n_head}: ` +
    `row = a query token, column = a key token; each row sums to 1. Colour from 0 to this head's largest weight ` +
    `(${fmt(max)}).`;
  $("mask-caption").textContent = a.causal
    ? "The look-ahead mask of masked (causal) self-attention, as in GPT: a token sees itself and the tokens " +
      "before it, never the ones after (lower triangle), so the model can be trained to predict the next token. " +
      "BERT's encoder has no such mask: every token sees every token (all ones)."
    : a.kind === "cross"
      ? "Cross-attention has no look-ahead mask: each decoder position reads the whole source (all ones)."
      : "Bidirectional self-attention, as in BERT or any encoder: every token sees every token, before and " +
        "after it (all ones). GPT's masked self-attention would keep only the lower triangle.";
  for (const id of ["attn-canvas", "mask-canvas"]) {     // what is drawn, and for which request (tests wait on it)
    $(id).dataset.shown = `${a.kind}/${a.layer}/${a.head}`;
    $(id).dataset.request = String(ticket);
  }
}

function hoverAttention(event) {
  const cell = cellAt(event.currentTarget, event);
  if (!cell || !state.attn) return;
  const a = state.attn;
  const weight = a.weights[cell.r][cell.c], allowed = a.mask[cell.r][cell.c];
  $("attn-hover").textContent = `query ${cell.r} "${a.tokens[cell.r]}" → key ${cell.c} "${a.key_tokens[cell.c]}": ` +
    `weight ${fmt(weight)}${allowed ? "" : " (masked)"}`;
}

// --- positions ------------------------------------------------------------------------------------

async function loadPositions() {
  let p;
  try {
    p = await getJSON("/api/positions?n_positions=128");
  } catch (e) {
    showError("positions: " + (e.message || e));
    return;
  }
  $("pos-caption").textContent = p.caption;
  const canvas = $("pos-canvas");
  if (!p.table) {
    canvas.hidden = true;
    $("pos-axes").textContent = "";
    return;
  }
  const flat = p.table.flat(), max = Math.max(1e-9, ...flat.map(Math.abs));
  const rowLabels = p.table.map((_, i) => String(i)), colLabels = p.table[0].map((_, i) => String(i));
  drawHeatmap(canvas, p.table, { rowLabels, colLabels, rowTitle: p.rows, colTitle: p.columns, maxWidth: 640,
                                 maxHeight: 420, maxCell: 24, colour: (v) => ramp(RDBU, 0.5 + v / (2 * max)),
                                 bar: { min: -max, max } });
  canvas.dataset.kind = p.kind;
  $("pos-axes").textContent = `rows: ${p.rows}; columns: ${p.columns}` +
    (p.module ? `; from the model's ${p.module}` : "") + `; colour from −${fmt(max)} (blue) to ${fmt(max)} (red).`;
  $("pos-freq-figure").hidden = !p.frequencies;
  if (p.frequencies) drawFrequencies($("pos-freq-canvas"), p.frequencies);
}

// θ_i against i on a log scale: the rotary frequencies fall geometrically with the pair index.
function drawFrequencies(canvas, freqs) {
  const w = 420, h = 260, l = 56, r = 12, t = 14, b = 34;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.width = w + "px"; canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
  const logs = freqs.map((f) => Math.log10(Math.max(f, 1e-12)));
  const lo = Math.floor(Math.min(...logs)), hi = Math.ceil(Math.max(...logs, lo + 1));
  const x = (i) => l + (i / Math.max(1, freqs.length - 1)) * (w - l - r);
  const y = (v) => t + (hi - v) / (hi - lo) * (h - t - b);
  ctx.strokeStyle = "#e3e6ec"; ctx.fillStyle = "#5f6b7a"; ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let e = lo; e <= hi; e++) {
    ctx.beginPath(); ctx.moveTo(l, y(e)); ctx.lineTo(w - r, y(e)); ctx.stroke();
    ctx.fillText("1e" + e, l - 4, y(e));
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  const step = Math.max(1, Math.ceil(freqs.length / 8));
  for (let i = 0; i < freqs.length; i += step) ctx.fillText(String(i), x(i), h - b + 4);
  ctx.fillText("channel pair i", l + (w - l - r) / 2, h - 14);
  ctx.strokeStyle = "#2456a6"; ctx.lineWidth = 2; ctx.beginPath();
  logs.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
}

function hoverPositions(event) {
  const cell = cellAt(event.currentTarget, event);
  if (cell) $("pos-hover").textContent = `row ${cell.r}, column ${cell.c}: ${fmt(cell.v)}`;
}

// --- wiring ---------------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => showView(tab.dataset.view));
  const key = $("api-key");
  key.value = sessionStorage.getItem("tkit-api-key") || "";
  key.addEventListener("change", () => {
    if (key.value) sessionStorage.setItem("tkit-api-key", key.value);
    else sessionStorage.removeItem("tkit-api-key");
    for (const view in loaded) delete loaded[view];
    loadInfo();
  });
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-clear").addEventListener("click", clearChat);
  $("attn-form").addEventListener("submit", runAttention);
  $("attn-kind").addEventListener("change", () => { fillLayers(); runAttention(); });
  for (const id of ["attn-layer", "attn-head"]) $(id).addEventListener("change", () => runAttention());
  for (const id of ["attn-canvas", "mask-canvas"]) $(id).addEventListener("mousemove", hoverAttention);
  $("pos-canvas").addEventListener("mousemove", hoverPositions);
  loadInfo();
});
