// The explorer: one page over the JSON API of `pcmpipe serve`. No build step, no libraries, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
let runs = [];

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function api(path, options) {
  const response = await fetch(path, { ...options, headers: { ...headers, ...(options && options.headers) } });
  const body = await response.json().catch(() => ({ error: "the service sent no JSON (" + response.status + ")" }));
  if (!response.ok) throw new Error(body.error || "request failed (" + response.status + ")");
  return body;
}

function currentRun() { return runs.find((r) => r.name === $("run").value) || runs[0]; }
function kindOf(modality) {
  const m = currentRun().modalities.find((x) => x.name === modality);
  return m ? m.kind : "vector";
}

function fillModalities() {
  const run = currentRun();
  const searchable = run.modalities.filter((m) => m.gallery > 0);
  const options = (list) => list.map((m) => new Option(`${m.name} (${m.kind})`, m.name));
  const keepFrom = $("from").value, keepTo = $("to").value;
  $("from").replaceChildren(...options(run.modalities));
  $("to").replaceChildren(...options(searchable));
  const text = run.modalities.find((m) => m.kind === "text");
  const image = searchable.find((m) => m.kind === "image");
  $("from").value = run.modalities.some((m) => m.name === keepFrom) ? keepFrom : (text || run.modalities[0]).name;
  $("to").value = searchable.some((m) => m.name === keepTo) ? keepTo : (image || searchable[0]).name;
  const sizes = searchable.map((m) => `${m.name}: ${m.gallery} rows`).join(", ");
  $("runinfo").textContent = `run ${run.name}, ${run.dim} dimensions; galleries ${sizes}`;
}

function card(hit, modality, run) {
  const el = document.createElement("article");
  el.className = "card";
  const kind = kindOf(modality);
  const pick = document.createElement("button");
  pick.type = "button";
  pick.className = "pick";
  pick.setAttribute("aria-label", `search from ${modality} ${hit.id}` + (hit.text ? `: ${hit.text}` : ""));
  if (hit.thumb_url) {
    const img = document.createElement("img");
    img.src = hit.thumb_url;
    img.alt = `${modality} ${hit.id}`;
    img.loading = "lazy";
    pick.appendChild(img);
  } else {
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = hit.text || (kind === "audio" ? `audio ${hit.id}` : `${modality} ${hit.id}`);
    pick.appendChild(caption);
  }
  pick.addEventListener("click", () => searchFrom(run, modality, hit.id));
  el.appendChild(pick);
  if (kind === "audio" && hit.media_url) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = hit.media_url;
    el.appendChild(audio);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = "<span></span><span></span>";
  meta.children[0].textContent = hit.id;
  meta.children[1].textContent = hit.score.toFixed(3);
  el.appendChild(meta);
  return el;
}

function show(answer, what) {
  const grid = $("results");
  grid.replaceChildren(...answer.hits.map((h) => card(h, answer.to, answer.run)));
  const note = answer.note ? ` (${answer.note})` : "";
  setStatus(`${answer.hits.length} ${answer.to} results for ${what}; searched ${answer.searched}${note}`);
}

async function searchJSON(body, what) {
  setStatus("searching…");
  try {
    show(await api("/api/search", { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify(body) }), what);
  } catch (err) { setStatus(err.message, true); }
}

function searchFrom(run, modality, id) {
  // a result becomes the query; the other side of the search is what was searched from before
  const previous = $("from").value;
  $("from").value = modality;
  if (previous !== modality && [...$("to").options].some((o) => o.value === previous)) $("to").value = previous;
  searchJSON({ run, from: modality, to: $("to").value, id, k: Number($("k").value) }, `${modality} ${id}`);
}

async function searchFile(file) {
  const kind = file.type.startsWith("audio") ? "audio" : "image";
  const from = currentRun().modalities.find((m) => m.kind === kind);
  if (!from) { setStatus(`run ${currentRun().name} has no ${kind} modality to search from`, true); return; }
  $("from").value = from.name;
  if ($("to").value === from.name) {
    const other = [...$("to").options].find((o) => o.value !== from.name);
    if (other) $("to").value = other.value;
  }
  const form = new FormData();
  form.append("file", file, file.name || "query");
  form.append("from", from.name);
  form.append("to", $("to").value);
  form.append("k", $("k").value);
  form.append("run", currentRun().name);
  setStatus("searching…");
  try { show(await api("/api/search/file", { method: "POST", body: form }), file.name || `recorded ${kind}`); }
  catch (err) { setStatus(err.message, true); }
}

// ---- microphone: recorded, decoded, and sent as 16-bit mono WAV (a format the service reads) ----
function wavOf(buffer) {
  const samples = buffer.getChannelData(0), rate = buffer.sampleRate;
  const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((c, i) => out.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); out.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVEfmt ");
  out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, rate, true); out.setUint32(28, rate * 2, true); out.setUint16(32, 2, true);
  out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, samples.length * 2, true);
  samples.forEach((v, i) => out.setInt16(44 + i * 2, Math.max(-1, Math.min(1, v)) * 0x7fff, true));
  return new Blob([out], { type: "audio/wav" });
}

let recorder = null;
async function toggleMic() {
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("this browser gives no microphone here (it needs https or localhost)", true); return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("mic").setAttribute("aria-pressed", "false");
      $("mic").textContent = "● record";
      const raw = await new Blob(chunks).arrayBuffer();
      const decoded = await new AudioContext().decodeAudioData(raw);
      searchFile(new File([wavOf(decoded)], "recording.wav", { type: "audio/wav" }));
    };
    recorder.start();
    $("mic").setAttribute("aria-pressed", "true");
    $("mic").textContent = "■ stop";
    setStatus("recording… press stop to search");
  } catch (err) { setStatus("microphone: " + err.message, true); }
}

function wire() {
  $("run").addEventListener("change", fillModalities);
  $("swap").addEventListener("click", () => {
    const from = $("from").value, to = $("to").value;
    if ([...$("to").options].some((o) => o.value === from)) { $("from").value = to; $("to").value = from; }
  });
  $("query").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) { setStatus("type a query, or drop a file", true); return; }
    if (kindOf($("from").value) !== "text") {
      const t = currentRun().modalities.find((m) => m.kind === "text");
      if (t) $("from").value = t.name;
    }
    searchJSON({ run: currentRun().name, from: $("from").value, to: $("to").value, text,
                 k: Number($("k").value) }, `"${text}"`);
  });
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) searchFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) searchFile($("file").files[0]); });
  $("mic").addEventListener("click", toggleMic);
}

async function start() {
  wire();
  try {
    runs = (await api("/api/runs")).runs;
    $("run").replaceChildren(...runs.map((r) => new Option(r.name, r.name)));
    fillModalities();
    setStatus("ready: type a query, drop a file, or record");
    $("text").focus();
  } catch (err) { setStatus(err.message, true); }
}
start();
