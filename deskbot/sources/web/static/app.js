// deskbot's web console: live answers (server-sent events), the preview, the character
// count, local times, sorting and searching. Text is set with textContent only.
"use strict";

function liveAnswers() {
  const table = document.getElementById("answers");
  if (!table || !table.dataset.events) return;
  const events = new EventSource(table.dataset.events);
  events.addEventListener("row", (event) => {
    const row = JSON.parse(event.data);
    let tr = null;
    for (const candidate of table.tBodies[0].rows) {
      if (candidate.dataset.extension === row.extension) tr = candidate;
    }
    if (!tr) return;
    tr.className = row.outcome;
    tr.querySelector(".answer").textContent = row.answer;
    tr.querySelector(".hint").textContent = row.hint;
    tr.querySelector(".ms").textContent = row.outcome === "waiting" ? "" : String(row.elapsed_ms);
    const confirm = tr.querySelector(".confirm");
    if (confirm) {
      confirm.className = "confirm " + row.confirm.replace(/ /g, "-");
      confirm.textContent = row.confirm_words;
      if (row.confirmed_at) {
        const when = document.createElement("time");
        when.setAttribute("datetime", new Date(row.confirmed_at * 1000).toISOString());
        confirm.append(" ", when);
        localTimes(confirm);
      }
    }
  });
  events.addEventListener("done", (event) => {
    const done = JSON.parse(event.data);
    const waiting = done.waiting ? `waiting for ${done.waiting} confirmation(s)` : "";
    document.getElementById("summary").textContent = [done.summary, waiting]
      .filter(Boolean).join("; ");
    if (!done.waiting) events.close();  // else the confirmations come on the same stream
  });
}

function preview() {
  const targets = document.getElementById("targets");
  const out = document.getElementById("preview");
  if (!targets || !out) return;
  let timer = 0;
  let asked = "";
  const ask = async () => {
    const value = targets.value.trim();
    if (value === asked) return;
    asked = value;
    if (!value) { out.textContent = ""; return; }
    const answer = await fetch("/preview?targets=" + encodeURIComponent(value), {
      credentials: "same-origin",
    });
    if (!answer.ok || asked !== value) return;
    const body = await answer.json();
    out.textContent = body.text;
    out.classList.toggle("problem", body.error);
  };
  targets.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(ask, 250); });
  targets.addEventListener("change", ask);
  if (targets.value) ask();
}

function characterCount() {
  const message = document.getElementById("message");
  const count = document.getElementById("count");
  if (!message || !count) return;
  const max = Number(message.dataset.max);
  const show = () => {
    const n = [...message.value].length;
    count.textContent = `${n}/${max} characters` + (n > max ? `: ${n - max} too many` : "");
    count.classList.toggle("problem", n > max);
  };
  message.addEventListener("input", show);
  show();
}

function localTimes(within = document) {
  const today = new Date().toDateString();
  for (const el of within.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) continue;
    const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    el.textContent = when.toDateString() === today ? time : `${when.toLocaleDateString()} ${time}`;
    el.title = when.toString();
  }
}

function sortable() {
  for (const table of document.querySelectorAll("table.sortable")) {
    const heads = table.tHead ? [...table.tHead.rows[0].cells] : [];
    heads.forEach((th, column) => {
      if (!th.textContent.trim()) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      th.textContent = "";
      th.append(button);
      button.addEventListener("click", () => {
        const up = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        const key = (tr) => {
          const cell = tr.cells[column];
          return cell ? (cell.dataset.sort ?? cell.textContent.trim()) : "";
        };
        const rows = [...table.tBodies[0].rows];
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          const nx = Number(x), ny = Number(y);
          const order = x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)
            ? nx - ny : x.localeCompare(y);
          return up ? order : -order;
        });
        table.tBodies[0].append(...rows);
      });
    });
  }
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const table = document.getElementById(input.dataset.filter);
    if (!table) continue;
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase();
      for (const tr of table.tBodies[0].rows) {
        tr.hidden = !tr.textContent.toLowerCase().includes(words);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  liveAnswers();
  preview();
  characterCount();
  localTimes();
  sortable();
});
