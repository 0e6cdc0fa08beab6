// Live events: Server-Sent Events from /admin/api/live, shown newest first. Every value comes from events,
// destinations' answers or configs, so it is only ever set with textContent or as an attribute value.
(function () {
  "use strict";
  const KEEP = 300;              // rows kept on the page
  const RENDER_PER_TICK = 40;    // rows added every TICK_MS at most
  const TICK_MS = 250;
  const BACKLOG = 400;           // items waiting to be drawn; past it the oldest are counted, not drawn

  const form = document.getElementById("live-filters");
  const rows = document.getElementById("live-rows");
  const stateEl = document.getElementById("live-state");
  const sampledEl = document.getElementById("sampled");
  const pauseBtn = document.getElementById("pause");
  const view = document.getElementById("json-view");
  const viewBody = document.getElementById("json-body");
  const viewTitle = document.getElementById("json-title");
  const viewOpen = document.getElementById("json-open");
  document.getElementById("keep").textContent = String(KEEP);

  let source = null;
  let paused = false;
  let backlog = [];
  const notShown = {server: 0, page: 0};
  const seen = new Set();
  const seenOrder = [];

  function params() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) { if (v) { p.set(k, String(v)); } }
    return p;
  }

  function setState(text) { stateEl.textContent = text; }

  function showSampled() {
    const total = notShown.server + notShown.page;
    if (!total) { sampledEl.hidden = true; return; }
    sampledEl.hidden = false;
    sampledEl.textContent = "sampled: " + total + " events not shown (" + notShown.server +
      " not read by the server, " + notShown.page + " not drawn): the stream is faster than this page shows";
  }

  function connect(resumed) {
    if (source) { source.close(); }
    const p = params();
    if (resumed) { p.set("recent", "0"); }
    source = new EventSource("/admin/api/live?" + p.toString());
    setState("connecting…");
    source.addEventListener("hello", function () { setState("live"); });
    source.addEventListener("item", function (e) {
      let item;
      try { item = JSON.parse(e.data); } catch (err) { return; }
      if (backlog.length >= BACKLOG) { backlog.shift(); notShown.page += 1; showSampled(); }
      backlog.push(item);
    });
    source.addEventListener("sampled", function (e) {
      try {
        const s = JSON.parse(e.data);
        notShown.server += (Number(s.dropped) || 0) + (Number(s.skipped) || 0);
      } catch (err) { return; }
      showSampled();
    });
    source.onerror = function () { if (!paused) { setState("reconnecting…"); } };
  }

  function keyOf(item) { return [item.stage, item.queue, item.job_id, item.attempt || 0].join("/"); }

  function text(value) { return value === null || value === undefined ? "" : String(value); }

  function cell(tr, value, cls) {
    const td = document.createElement("td");
    td.textContent = text(value);
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }

  function timeOf(iso) {
    if (!iso) { return ""; }
    const d = new Date(iso);
    return isNaN(d.getTime()) ? text(iso) : d.toISOString().slice(11, 23);
  }

  function answer(item) {
    if (item.stage === "delivered") {
      return "HTTP " + text(item.status) + " · attempt " + text(item.attempt) + (item.response ? " · " + text(item.response) : "");
    }
    if (item.stage === "retrying") {
      return (item.status ? "HTTP " + text(item.status) : "no answer") + " · attempt " + text(item.attempt) +
        " · next " + timeOf(item.next_attempt_at) + (item.error ? " · " + text(item.error) : "");
    }
    if (item.stage === "failed") { return text(item.reason); }
    return "";
  }

  const STAGES = ["accepted", "transformed", "delivered", "retrying", "failed"];

  function draw(item) {
    const key = keyOf(item);
    if (seen.has(key)) { return; }
    seen.add(key); seenOrder.push(key);
    if (seenOrder.length > 5000) { seen.delete(seenOrder.shift()); }
    const tr = document.createElement("tr");
    const stage = STAGES.indexOf(item.stage) >= 0 ? item.stage : "other";
    tr.className = "stage-" + stage;
    tr.dataset.stage = stage;
    tr.dataset.job = text(item.job_id);
    tr.dataset.messageId = text(item.message_id);
    cell(tr, timeOf(item.at), "small");
    cell(tr, stage, "stage");
    cell(tr, text(item.source_id) + (item.destination_id ? " → " + text(item.destination_id) : ""), "clip");
    cell(tr, text(item.type) + (item.name ? " · " + text(item.name) : ""), "clip");
    cell(tr, text(item.user_id || item.anonymous_id || item.user_key), "clip");
    cell(tr, item.message_id, "clip");
    cell(tr, answer(item), "small clip answer");
    tr.tabIndex = 0;
    tr.addEventListener("click", function () { showJson(item); });
    tr.addEventListener("keydown", function (e) { if (e.key === "Enter") { showJson(item); } });
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childElementCount > KEEP) { rows.removeChild(rows.lastChild); }
  }

  function showJson(item) {
    const shown = Object.assign({}, item);
    viewTitle.textContent = text(item.stage) + " · " + text(item.queue) + " job " + text(item.job_id);
    viewBody.textContent = JSON.stringify(shown, null, 2);
    const queue = {gw_jobs: "gw", rt_jobs: "rt", batch_rt_jobs: "batch_rt"}[item.queue];
    if (queue && Number.isSafeInteger(item.job_id)) {
      viewOpen.href = "/admin/ui/job/" + queue + "/" + String(item.job_id);
      viewOpen.hidden = false;
    } else {
      viewOpen.hidden = true;
    }
    view.hidden = false;
  }

  document.getElementById("json-close").addEventListener("click", function () { view.hidden = true; });

  setInterval(function () {
    if (paused || !backlog.length) { return; }
    const batch = backlog.splice(0, RENDER_PER_TICK);
    for (const item of batch) { draw(item); }
  }, TICK_MS);

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    history.replaceState(null, "", "?" + params().toString());
    rows.textContent = "";
    backlog = [];
    seen.clear(); seenOrder.length = 0;
    connect();
  });

  pauseBtn.addEventListener("click", function () {
    paused = !paused;
    pauseBtn.setAttribute("aria-pressed", paused ? "true" : "false");
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    if (paused) {
      if (source) { source.close(); source = null; }
      backlog = [];
      setState("paused");
    } else {
      const tr = document.createElement("tr");
      tr.className = "divider";
      const td = cell(tr, "resumed: events during the pause are not shown");
      td.colSpan = 7;
      rows.insertBefore(tr, rows.firstChild);
      connect(true);
    }
  });

  document.getElementById("clear").addEventListener("click", function () { rows.textContent = ""; });

  connect();
})();
