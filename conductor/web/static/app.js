// The web view's only script: it keeps a server-rendered page live through the page's
// event stream (<body data-events="...">). Every page works without it. Pieces of pages
// arrive rendered by the server (escaped there) and replace their element by id; a
// task's output arrives as text and is only ever inserted as text.
"use strict";

(function () {
  const body = document.body;
  const status = document.getElementById("live");
  const OUTPUT_LIMIT = 200000; // characters kept in an output page; the oldest go first

  function say(text, kind) {
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.className = "live " + kind;
  }

  // Replace the element with the same id as the rendered piece's root.
  function replace(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (!fresh || !fresh.id) return;
    const old = document.getElementById(fresh.id);
    if (old) old.replaceWith(fresh);
  }

  function applyJob(data) {
    if (data.summary) replace(data.summary);
    if (data.progress) replace(data.progress);
    for (const id in data.rows || {}) replace(data.rows[id]);
    const grid = document.getElementById("grid");
    for (const number in data.cells || {}) {
      const square = grid && grid.children[Number(number)];
      if (!square) continue;
      const [host, state] = data.cells[number];
      square.setAttribute("class", "st-" + state);
      const title = square.querySelector("title");
      if (title) title.textContent = host + ": " + state;
    }
  }

  // How long running tasks have run, counted here between updates.
  function duration(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const whole = Math.floor(seconds);
    if (whole < 3600) return Math.floor(whole / 60) + "m " + String(whole % 60).padStart(2, "0") + "s";
    return Math.floor(whole / 3600) + "h " + String(Math.floor(whole % 3600 / 60)).padStart(2, "0") + "m";
  }
  function tick() {
    const now = Date.now() / 1000;
    for (const cell of document.querySelectorAll("td.duration[data-since]")) {
      cell.textContent = duration(Math.max(0, now - Number(cell.dataset.since)));
    }
  }

  const output = document.getElementById("output");
  let kept = 0;
  function append(items) {
    if (!output) return;
    const bottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
    for (const item of items || []) {
      const span = document.createElement("span");
      span.className = item.s;
      span.textContent = item.t;
      output.appendChild(span);
      kept += item.t.length;
    }
    while (kept > OUTPUT_LIMIT && output.firstChild) {
      kept -= output.firstChild.textContent.length;
      output.removeChild(output.firstChild);
    }
    if (bottom) output.scrollTop = output.scrollHeight;
  }
  function taskState(state) {
    const cell = document.getElementById("task-state");
    if (!cell || !state) return;
    cell.textContent = state;
    cell.className = "st st-" + state;
  }

  const handlers = {
    overview: { overview: (data) => replace(data.html) },
    jobs: { rows: (data) => { for (const id in data) replace(data[id]); } },
    job: { job: applyJob },
    output: { output: (data) => append(data.items), state: (data) => taskState(data.state) },
  };

  if (body.dataset.page === "job") setInterval(tick, 1000);
  const url = body.dataset.events;
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  source.onopen = () => say("live", "on");
  source.onerror = () => say(source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…", "off");
  for (const [event, handle] of Object.entries(handlers[body.dataset.page] || {})) {
    source.addEventListener(event, (message) => handle(JSON.parse(message.data)));
  }
  source.addEventListener("end", (message) => {
    source.close(); // over: not to be reconnected
    const data = JSON.parse(message.data);
    if (body.dataset.page === "job") applyJob(data);
    if (body.dataset.page === "output") { append(data.items); taskState(data.state); }
    say(data.message || "ended", "done");
  });
})();
