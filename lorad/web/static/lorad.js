// lorad web: live parts of the pages, the lightbox, and dropping a folder.
// Plain JavaScript, no build step, nothing fetched from elsewhere. MIT licence: see LICENSE.
"use strict";

const POLL_MS = 1000;
const csrf = () => document.body.dataset.csrf;

function poll(url, apply) {
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, {headers: {"Accept": "application/json"}});
      if (response.ok) apply(await response.json());
    } catch (error) {
      // the web process restarting: the next tick tries again
    } finally {
      busy = false;
    }
  };
  setInterval(tick, POLL_MS);
}

function replace(element, html) {
  if (element && element.dataset.html !== html) {
    element.innerHTML = html;
    element.dataset.html = html;
  }
}

function liveJobs() {
  const jobs = document.getElementById("jobs");
  if (jobs) poll(jobs.dataset.live, (data) => replace(jobs, data.table));
}

function liveJob() {
  const job = document.getElementById("job");
  if (!job) return;
  poll(job.dataset.live, (data) => {
    // A job that has just ended gets its actions (resume, retry): the whole page again.
    if (data.state !== job.dataset.state && ["done", "failed", "rejected", "cancelled"]
        .includes(data.state)) {
      location.reload();
      return;
    }
    job.dataset.state = data.state;
    for (const [part, html] of Object.entries(data.parts)) {
      replace(document.getElementById("part-" + part), html);
    }
  });
}

function lightbox() {
  const box = document.getElementById("lightbox");
  if (!box) return;
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a.full");
    if (!link) return;
    event.preventDefault();
    box.querySelector("img").src = link.href;
    box.hidden = false;
  });
  box.addEventListener("click", () => { box.hidden = true; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") box.hidden = true;
  });
}

function confirmForms() {
  document.addEventListener("submit", (event) => {
    const ask = event.target.dataset.confirm;
    if (ask && !confirm(ask)) event.preventDefault();
  });
}

// ---- dropping a folder -----------------------------------------------------------------
async function entriesOf(entry, prefix, found) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    found.push({path: prefix + entry.name, file});
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const inner of batch) await entriesOf(inner, prefix + entry.name + "/", found);
    }
  }
}

function dropForm() {
  const form = document.getElementById("drop-form");
  if (!form) return;
  let folder = null;  // {name, files: [{path, file}]}
  const chosen = document.getElementById("chosen");
  const send = document.getElementById("send");
  const result = document.getElementById("drop-result");
  const choose = (name, files) => {
    folder = {name, files};
    document.getElementById("name").value = name;
    chosen.textContent = `${name}: ${files.length} files`;
    send.disabled = !files.length;
    result.textContent = "";
  };
  document.getElementById("folder").addEventListener("change", (event) => {
    const files = [...event.target.files];
    if (!files.length) return;
    const top = files[0].webkitRelativePath.split("/")[0] || "photos";
    choose(top, files.map((file) => ({
      path: (file.webkitRelativePath || file.name).split("/").slice(1).join("/") || file.name,
      file})));
  });
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const entry = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry())
      .find((e) => e && e.isDirectory);
    if (!entry) { result.textContent = "drop a folder, not single files"; return; }
    const found = [];
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const inner of batch) await entriesOf(inner, "", found);
    }
    choose(entry.name, found);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!folder) return;
    send.disabled = true;
    try {
      result.textContent = await upload(folder);
      result.className = "said";
    } catch (error) {
      result.textContent = error.message;
      result.className = "error";
      send.disabled = false;
    }
  });
}

async function call(method, url, body, type) {
  const response = await fetch(url, {method, body, headers: {
    "X-CSRF-Token": csrf(), "Content-Type": type || "application/json"}});
  const data = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

async function upload(folder) {
  const value = (id) => document.getElementById(id).value.trim();
  const started = await call("POST", "/drop/start", JSON.stringify({
    name: value("name") || folder.name, token: value("token"), model: value("model"),
    epochs: value("epochs"), files: folder.files.map((f) => ({path: f.path, size: f.file.size}))}));
  const bar = document.getElementById("sent");
  const wanted = new Set(started.send);
  const files = folder.files.filter((f) => wanted.has(f.path));
  bar.hidden = false;
  bar.max = files.length;
  let done = 0;
  try {
    for (const f of files) {
      await call("PUT", `/drop/${started.id}/file?path=${encodeURIComponent(f.path)}`, f.file,
                 "application/octet-stream");
      bar.value = ++done;
    }
    const finished = await call("POST", `/drop/${started.id}/finish`, "{}");
    const skipped = started.skipped.length ? ` (not sent: ${started.skipped.join("; ")})` : "";
    return `${finished.folder} is in the inbox: ${files.length} files${skipped}. It appears in the jobs list within seconds.`;
  } catch (error) {
    await call("POST", `/drop/${started.id}/abandon`, "{}").catch(() => {});
    throw error;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  liveJobs();
  liveJob();
  lightbox();
  confirmForms();
  dropForm();
});
