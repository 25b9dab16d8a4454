// The search page: upload a drawing to /api/search, show the top-k, open a patent's drawings.
"use strict";

const $ = (id) => document.getElementById(id);
let maxUploadBytes = null;
let lastFile = null;  // the current query: changing an option searches it again

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail);
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function baseName(path) {
  return path.split(/[\\/]/).pop();
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

const UNKNOWN_PATENT = "no known patent";

// A result (rank, score, patent; click -> all drawings of the patent) or one drawing of an opened patent.
// A drawing of unknown patent says so and opens nothing.
function card(entry, withScore, matched = null) {
  const clickable = withScore && entry.patent !== null;
  const el = document.createElement(clickable ? "button" : "div");
  el.className = withScore ? "card result" : "card drawing";
  el.title = entry.path;
  const img = document.createElement("img");
  img.src = entry.thumb_url;
  img.alt = entry.patent === null ? `drawing ${entry.item} (${UNKNOWN_PATENT})`
                                  : `drawing ${entry.item} of patent ${entry.patent}`;
  img.loading = "lazy";
  const meta = document.createElement("div");
  meta.className = "meta";
  if (withScore) {
    if (clickable) {
      el.type = "button";
      el.title += `\nclick: all drawings of patent ${entry.patent}`;
      el.addEventListener("click", () => openPatent(entry.patent, entry.item));
    }
    meta.append(span("rank", `#${entry.rank}`), span("score", entry.score.toFixed(3)));
    el.append(img, meta, entry.patent === null ? span("patent unknown", UNKNOWN_PATENT) : span("patent", entry.patent));
  } else {
    el.classList.toggle("matched", entry.item === matched);
    meta.append(span("item", `item ${entry.item}`), span("note", entry.item === matched ? "matched" : ""));
    el.append(img, meta, span("file", baseName(entry.path)));
  }
  return el;
}

async function search(file) {
  if (!file) return;
  lastFile = file;
  $("results").replaceChildren();
  const preview = $("query-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  if (maxUploadBytes !== null && file.size > maxUploadBytes) {
    setStatus(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB, above the server's limit of ` +
              `${(maxUploadBytes / 1048576).toFixed(1)} MB`, true);
    return;
  }
  setStatus(`Searching with ${file.name} ...`);
  const form = new FormData();
  form.append("file", file);
  form.append("k", $("k").value || "10");
  form.append("qe", $("qe").checked ? "true" : "false");
  const byPatent = $("by-patent").checked;
  form.append("by_patent", byPatent ? "true" : "false");
  let response;
  try {
    response = await fetch("/api/search", { method: "POST", body: form });
  } catch (e) {
    setStatus(`The server cannot be reached: ${e}`, true);
    return;
  }
  if (!response.ok) {
    const detail = response.status === 413 && maxUploadBytes !== null
      ? `${file.name} is larger than the server's limit of ${(maxUploadBytes / 1048576).toFixed(1)} MB`
      : await errorText(response);
    setStatus(`Error ${response.status}: ${detail}`, true);
    return;
  }
  const answer = await response.json();
  const shown = byPatent ? answer.patents : answer.results;
  $("results").classList.toggle("grid", !byPatent);
  $("results").replaceChildren(...(byPatent ? answer.patents.map(patentGroup) : answer.results.map((r) => card(r, true))));
  $("results-title").textContent = byPatent ? "Closest patents" : "Closest drawings";
  $("results-hint").hidden = true;
  setStatus("");
  const time = document.createElement("span");
  time.id = "query-time";
  time.textContent = `${shown.length} ${byPatent ? "patents" : "results"} in ${answer.query_ms.toFixed(1)} ms` +
                     (answer.qe ? " (query expansion)" : "");
  $("status").append(time);
}

// One patent of the grouped view: its rank, id and best score, then its matching drawings together.
function patentGroup(group) {
  const el = document.createElement("section");
  el.className = "patent-group";
  const head = document.createElement("div");
  head.className = "group-head";
  head.append(span("group-rank", `#${group.rank}`),
              span(group.patent === null ? "group-patent unknown" : "group-patent", group.patent ?? UNKNOWN_PATENT),
              span("group-score", group.score.toFixed(3)),
              span("muted", `${group.drawings.length} matching drawing(s)`));
  const drawings = document.createElement("div");
  drawings.className = "grid";
  drawings.append(...group.drawings.map((d) => card(d, true)));
  el.append(head, drawings);
  return el;
}

async function openPatent(patentId, matchedItem) {
  const response = await fetch(`/api/patent/${encodeURIComponent(patentId)}`);
  if (!response.ok) {
    setStatus(`Error ${response.status}: ${await errorText(response)}`, true);
    return;
  }
  const answer = await response.json();
  $("patent-title").textContent = `Patent ${answer.patent}: ${answer.drawings.length} drawing(s)`;
  $("patent-drawings").replaceChildren(...answer.drawings.map((d) => card(d, false, matchedItem)));
  $("patent-dialog").showModal();
}

function setUp() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => search(e.target.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragover");
    search(e.dataTransfer.files[0]);
  });
  $("patent-close").addEventListener("click", () => $("patent-dialog").close());
  for (const id of ["by-patent", "qe"]) $(id).addEventListener("change", () => search(lastFile));
  fetch("/healthz").then((r) => r.json()).then((h) => {
    maxUploadBytes = h.max_upload_bytes;
    $("k").max = h.max_k;
    $("index-info").textContent = `${h.items.toLocaleString()} drawings indexed`;
    // The index's recorded expansion is on by default (the evaluator's answers); none recorded: nothing to toggle.
    $("qe").checked = Boolean(h.qe);
    $("qe").disabled = !h.qe;
    if (h.qe) $("qe-label").title = `QE_K ${h.qe.k}, ALPHA ${h.qe.alpha}, mode ${h.qe.mode}`;
  }).catch(() => setStatus("The server cannot be reached.", true));
}

document.addEventListener("DOMContentLoaded", setUp);
