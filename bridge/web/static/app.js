// The status page, kept current by /api/events. Plain script, no build step.
"use strict";
(() => {
  const body = document.body;
  const page = body.dataset.page;
  let offset = (Date.parse(body.dataset.now) || Date.now()) - Date.now(); // server clock minus ours

  const pad = (n) => String(n).padStart(2, "0");
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }
  function tick() {
    const now = Date.now() + offset;
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration((now - Date.parse(el.dataset.since)) / 1000);
    }
  }
  function localise(root) {
    for (const el of root.querySelectorAll("time[data-local]")) {
      const when = new Date(el.dateTime);
      if (!isNaN(when)) {
        el.textContent = el.dataset.local === "time" ? when.toLocaleTimeString() : when.toLocaleString();
        el.title = when.toLocaleString();
      }
      el.removeAttribute("data-local");
    }
  }
  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    localise(t.content);
    return t.content;
  }

  // ---- debug log filter -------------------------------------------------------------------------
  const hits = document.getElementById("hits");
  const filterDevice = document.getElementById("filter-device");
  const filterRefused = document.getElementById("filter-refused");
  function shown(row) {
    if (filterRefused && filterRefused.checked && row.dataset.outcome !== "refused") return false;
    const wanted = filterDevice ? filterDevice.value : "";
    if (!wanted) return true;
    if (row.dataset.device) return row.dataset.device === wanted;
    const ip = filterDevice.selectedOptions[0].dataset.ip; // a refused hit that named no phone
    return !!ip && row.dataset.source === ip;
  }
  function filter() {
    if (hits) for (const row of hits.rows) row.hidden = !shown(row);
  }
  filterDevice && filterDevice.addEventListener("change", filter);
  filterRefused && filterRefused.addEventListener("change", filter);

  // ---- live updates -----------------------------------------------------------------------------
  const handlers = {
    device(data) {
      if (data.now) offset = Date.parse(data.now) - Date.now();
      const node = fragment(data.html).firstElementChild;
      const old = document.getElementById("phone-" + data.id);
      const phones = document.getElementById("phones");
      if (old) old.replaceWith(node);
      else if (phones) phones.append(node);
      const empty = document.getElementById("no-phones");
      if (empty && phones) empty.hidden = true;
      if (filterDevice && ![...filterDevice.options].some((o) => o.value === data.id)) {
        const option = new Option(data.device.name, data.id);
        option.dataset.ip = data.device.status.ip || "";
        filterDevice.append(option);
      }
      tick();
    },
    removed(data) {
      const old = document.getElementById("phone-" + data.id);
      if (old) old.remove();
    },
    health(data) {
      const health = document.getElementById("health");
      if (health) health.replaceChildren(fragment(data.html));
    },
    calls(data) {
      const recent = document.getElementById("recent");
      if (recent) recent.replaceChildren(fragment(data.html));
    },
    hit(data) {
      if (!hits || hits.querySelector(`tr[data-seq="${data.seq}"]`)) return;
      const row = fragment(data.html).firstElementChild;
      row.hidden = !shown(row);
      hits.prepend(row);
      const size = Number(hits.dataset.size) || 500;
      while (hits.rows.length > size) hits.deleteRow(-1);
      const empty = document.getElementById("no-hits");
      if (empty) empty.hidden = true;
    },
  };
  const live = document.getElementById("live");
  function say(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }
  if ((page === "index" || page === "debug") && window.EventSource) {
    const source = new EventSource("/api/events?after=" + encodeURIComponent(body.dataset.seq || "0"));
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
    }
    source.onopen = () => say("on", "Live");
    source.onerror = () => say("lost", "Reconnecting…");
  }

  // ---- copy buttons (navigator.clipboard needs https; a phone's LAN page is plain http) ---------
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const label = button.textContent;
    try {
      await copy(source.textContent.trim());
      button.textContent = "Copied";
    } catch (err) {
      button.textContent = "Copy failed: select the text";
    }
    button.dataset.done = "";
    setTimeout(() => { button.textContent = label; delete button.dataset.done; }, 1500);
  });

  localise(document);
  filter();
  tick();
  setInterval(tick, 1000);
})();
