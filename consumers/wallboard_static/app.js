// tcx-bridge wallboard: renders the snapshots pushed on /events; durations tick every second.
"use strict";
let state = null;
let skew = 0; // server clock minus browser clock, in ms

const $ = (id) => document.getElementById(id);
const seconds = (iso) => iso ? Math.max(0, (Date.now() + skew - Date.parse(iso)) / 1000) : 0;
const clock = (s) => { s = Math.floor(s); const m = Math.floor(s / 60); return `${m}:${String(s % 60).padStart(2, "0")}`; };
const pct = (v) => v === null || v === undefined ? "-" : `${(v * 100).toFixed(1)}%`;
const secs = (v) => v === null || v === undefined ? "-" : `${Math.round(v)}s`;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function level(tile, value, name) {
  const limits = (state.thresholds || {})[name];
  const node = document.querySelector(`[data-tile="${tile}"]`);
  node.classList.remove("amber", "red");
  if (!limits || value === null) return;
  if (value >= limits[1]) node.classList.add("red"); else if (value >= limits[0]) node.classList.add("amber");
}

function render() {
  if (!state) return;
  const t = state.tiles;
  $("day").textContent = `${state.day} (${state.timezone})`;
  $("t-ringing").textContent = t.ringing;
  $("t-talking").textContent = t.talking;
  $("t-answered").textContent = t.answered;
  $("t-missed").textContent = t.missed;
  $("t-answer_rate").textContent = pct(t.answer_rate);
  $("t-service_level").textContent = pct(t.service_level);
  $("l-service_level").textContent = `Service level (${state.service_level_seconds}s)`;
  $("t-ring_avg").textContent = secs(t.ring_avg);
  $("t-talk_avg").textContent = secs(t.talk_avg);
  level("ringing", t.ringing, "waiting");
  level("missed", t.missed, "missed");

  const desks = $("desks");
  desks.replaceChildren(...state.desks.map((d) => {
    const card = el("div", { class: `desk ${d.state}`, "data-desk": d.desk, "data-state": d.state });
    card.append(el("div", { class: "name" }, d.desk), el("div", { class: "state" }, d.state));
    if (d.state === "ringing" || d.state === "talking") {
      card.append(el("div", { class: "who" }, [d.contact, d.caller].filter(Boolean).join(" \u00b7 ") || "unknown"));
      card.append(el("div", { class: "clock", "data-since": d.since }, clock(seconds(d.since))));
    }
    return card;
  }));

  const max = Math.max(1, ...state.chart);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 96 40");
  svg.setAttribute("preserveAspectRatio", "none");
  state.chart.forEach((n, i) => {
    if (!n) return;
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const h = (n / max) * 38;
    bar.setAttribute("x", i + 0.1); bar.setAttribute("width", 0.8); bar.setAttribute("y", 40 - h); bar.setAttribute("height", h);
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${String(Math.floor(i / 4)).padStart(2, "0")}:${String((i % 4) * 15).padStart(2, "0")} ${n} calls`;
    bar.append(title);
    svg.append(bar);
  });
  $("chart").replaceChildren(svg);

  $("recent").tBodies[0].replaceChildren(...state.recent.map((c) => {
    const row = el("tr");
    const time = c.time ? new Date(c.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "-";
    row.append(el("td", {}, time), el("td", {}, c.desk), el("td", {}, c.direction === "outbound" ? "out" : "in"),
      el("td", {}, c.caller || "anonymous"), el("td", {}, c.contact || ""), el("td", { class: c.outcome }, c.outcome),
      el("td", {}, secs(c.ring)), el("td", {}, secs(c.talk)));
    return row;
  }));
  tick();
}

function tick() {
  if (!state) return;
  const wait = seconds(state.tiles.longest_wait_since);
  $("t-wait").textContent = state.tiles.longest_wait_since ? clock(wait) : "-";
  level("wait", state.tiles.longest_wait_since ? wait : null, "wait");
  for (const node of document.querySelectorAll("[data-since]")) node.textContent = clock(seconds(node.dataset.since));
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => { $("link").textContent = "live"; $("link").className = "status online"; };
  source.onmessage = (message) => {
    state = JSON.parse(message.data);
    skew = Date.parse(state.now) - Date.now();
    render();
  };
  source.onerror = () => { $("link").textContent = "reconnecting"; $("link").className = "status offline"; };
}

setInterval(tick, 1000);
connect();
