// The page's one job: send the file to /api/predict (the API curl uses) and draw its answer.
"use strict";
const $ = (id) => document.getElementById(id);
const COLOURS = ["#2a6df4", "#e8730c", "#8a2be2", "#10a37f", "#c01818"];

fetch("/api/info").then((r) => r.json()).then((info) => {
  $("model").textContent = `step ${info.step}, threshold ${info.threshold}, uploads up to ${Math.round(info.max_bytes / 1048576)} MB`;
});

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => { if (e.target.files.length) send(e.target.files[0]); });

function send(file) {
  $("error").hidden = true;
  $("result").hidden = true;
  $("progress").hidden = false;
  $("progress-text").textContent = `Uploading ${file.name}`;
  $("bar").value = 0;
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/predict?media=1");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) $("bar").value = (100 * e.loaded) / e.total; };
  xhr.upload.onload = () => {
    $("bar").removeAttribute("value");  // indeterminate while the model runs
    $("progress-text").textContent = `Finding faces and scoring ${file.name}`;
  };
  xhr.onerror = () => fail(`${file.name}: the server did not answer; is it still running?`);
  xhr.onload = () => {
    $("progress").hidden = true;
    let doc;
    try { doc = JSON.parse(xhr.responseText); } catch (err) { return fail(`${file.name}: HTTP ${xhr.status}`); }
    if (xhr.status !== 200) return fail(doc.error || `${file.name}: HTTP ${xhr.status}`);
    show(doc);
  };
  xhr.send(form);
}

function fail(message) {
  $("progress").hidden = true;
  $("error").textContent = message;
  $("error").hidden = false;
}

function show(doc) {
  const r = doc.results[0];
  const verdict = $("verdict");
  verdict.textContent = `${r.verdict === "fake" ? "Likely fake" : "Likely real"}: P(fake) ${r.score.toFixed(3)}`;
  verdict.className = r.verdict;
  const scored = new Set(r.frames.filter((f) => f.score !== null).map((f) => f.frame_index)).size;
  $("summary").textContent = `${r.path}: ${r.kind}, ${scored} frame(s) with a face; fake when P(fake) >= ${doc.threshold}.`;
  plot(r.frames);
  people(r.people || r.tracks || []);
  const overlays = $("overlays");
  overlays.replaceChildren();
  const media = doc.media || {};
  for (const [key, url] of Object.entries(media)) {
    if (!url.startsWith("data:image/")) continue;
    const img = document.createElement("img");
    img.src = url;
    img.alt = key.replace(/_/g, " ");
    img.className = "overlay";
    overlays.append(img);
  }
  const video = media.annotated_video;
  $("video-box").hidden = !video;
  if (video) {
    $("video").src = video;
    $("download").href = video;
    $("download").download = r.outputs.annotated_video;
  }
  $("result").hidden = false;
}

function plot(frames) {
  const svg = $("plot");
  const W = 640, H = 200, L = 36, B = 24, T = 8, R = 8;
  const rows = frames.filter((f) => f.score !== null);
  const xs = frames.map((f) => f.frame_index);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const x = (i) => L + ((i - x0) / (x1 - x0)) * (W - L - R);
  const y = (s) => T + (1 - s) * (H - T - B);
  let out = `<line x1="${L}" y1="${y(0.5)}" x2="${W - R}" y2="${y(0.5)}" stroke="#bbb" stroke-dasharray="4"/>`;
  for (const s of [0, 0.5, 1]) out += `<text x="4" y="${y(s) + 4}">${s}</text>`;
  out += `<text x="${L}" y="${H - 6}">frame ${x0}</text><text x="${W - R - 60}" y="${H - 6}">frame ${x1}</text>`;
  const tracks = [...new Set(rows.map((f) => f.track_id))];
  tracks.forEach((t, k) => {
    const pts = rows.filter((f) => f.track_id === t);
    const colour = COLOURS[k % COLOURS.length];
    out += `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map((f) => `${x(f.frame_index)},${y(f.score)}`).join(" ")}"/>`;
    for (const f of pts) out += `<circle cx="${x(f.frame_index)}" cy="${y(f.score)}" r="3" fill="${colour}"><title>frame ${f.frame_index}: ${f.score.toFixed(3)}</title></circle>`;
  });
  svg.innerHTML = out;
}

function people(rows) {
  const body = document.querySelector("#people tbody");
  body.replaceChildren();
  for (const p of rows) {
    const tr = document.createElement("tr");
    for (const v of [`#${p.track_id}`, p.frames, p.score.toFixed(3), p.verdict]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  }
}
