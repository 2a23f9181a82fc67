// tcx-bridge wallboard: renders the snapshots pushed on /events; durations tick every second.
// Times are written in the board's time zone (state.timezone) and numbers in its locale
// (state.locale); without a locale: a 24-hour clock and 1,234.5 (en-GB).
"use strict";
let state = null;
let skew = 0; // server clock minus browser clock, in ms
let format = null; // the formatters of state.locale and state.timezone

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const seconds = (iso) => iso ? Math.max(0, (Date.now() + skew - Date.parse(iso)) / 1000) : 0;
const two = (n) => String(n).padStart(2, "0");
const clock = (s) => {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
};

function formatters(locale, zone) {
  const tag = locale || "en-GB";
  const dates = (options) => {
    const wanted = { ...options, ...(zone ? { timeZone: zone } : {}), ...(locale ? {} : { hourCycle: "h23" }) };
    try { return new Intl.DateTimeFormat(tag, wanted); } catch (error) { // an unknown zone or locale
      return new Intl.DateTimeFormat("en-GB", { ...options, hourCycle: "h23" });
    }
  };
  const numbers = (options) => {
    try { return new Intl.NumberFormat(tag, options); } catch (error) { return new Intl.NumberFormat("en-GB", options); }
  };
  return {
    key: `${locale}|${zone}`,
    time: dates({ hour: "2-digit", minute: "2-digit" }),
    day: dates({ weekday: "long", day: "numeric", month: "long", year: "numeric" }),
    count: numbers({ maximumFractionDigits: 0 }),
    percent: numbers({ style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }),
  };
}

const time = (iso) => iso ? format.time.format(new Date(iso)) : "-";
const count = (v) => v === null || v === undefined ? "-" : format.count.format(v);
const pct = (v) => v === null || v === undefined ? "-" : format.percent.format(v);
const secs = (v) => v === null || v === undefined ? "-" : `${format.count.format(Math.round(v))}s`;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
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

function deskCard(d) {
  const card = el("div", {
    class: `desk ${d.state}`, "data-desk": d.desk, "data-state": d.state,
    "data-ringing": d.ringing, "data-talking": d.talking, "data-no-end-seen": d.no_end_seen,
  });
  card.append(el("div", { class: "name", title: d.desk }, d.desk), el("div", { class: "state" }, d.state));
  if (d.state === "ringing" || d.state === "talking") {
    const who = [d.contact, d.caller].filter(Boolean).join(" \u00b7 ") || "unknown";
    card.append(el("div", { class: "who", title: who }, who));
    card.append(el("div", { class: "clock", "data-since": d.since }, clock(seconds(d.since))));
  }
  if (d.ringing + d.talking > 1) {
    const calls = [d.ringing && `${count(d.ringing)} ringing`, d.talking && `${count(d.talking)} talking`];
    card.append(el("div", { class: "more" }, calls.filter(Boolean).join(" \u00b7 ")));
  }
  if (d.no_end_seen) card.append(el("div", { class: "lost" }, `${count(d.no_end_seen)} no end seen`));
  return card;
}

function chart(slots) {
  const W = 640, H = 200, left = 40, right = 10, top = 22, bottom = 30;
  const plotW = W - left - right, plotH = H - top - bottom;
  const most = Math.max(...slots.map((s) => s.calls), 0);
  const step = most <= 4 ? 1 : Math.ceil(most / 4);
  const high = Math.max(step, Math.ceil(most / step) * step);
  const y = (n) => top + plotH - (n / high) * plotH;
  const width = plotW / Math.max(1, slots.length);
  const node = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "calls per 15 minutes" });
  for (let n = 0; n <= high; n += step) {
    node.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(n), y2: y(n) }));
    node.append(svg("text", { class: "tick y", x: left - 6, y: y(n) + 4, "text-anchor": "end" }, count(n)));
  }
  node.append(svg("text", { class: "axis-title", x: left - 6, y: top - 10, "text-anchor": "end" }, "calls"));
  const hours = slots.length / 4;
  const every = Math.max(1, Math.ceil(hours / 8)); // at most 8 hour labels
  const current = Date.now() + skew;
  slots.forEach((slot, i) => {
    const x = left + i * width;
    const start = Date.parse(slot.at);
    if (i % (4 * every) === 0) {
      node.append(svg("line", { class: "tick-mark", x1: x, x2: x, y1: top + plotH, y2: top + plotH + 4 }));
      node.append(svg("text", { class: "tick x", x, y: H - bottom + 18, "text-anchor": "middle" }, time(slot.at)));
    }
    const h = (slot.calls / high) * plotH;
    const now = start <= current && current < start + 15 * 60000;
    const bar = svg("rect", {
      class: now ? "bar now" : "bar", x: x + width * 0.1, width: width * 0.8, y: top + plotH - h, height: h,
      "data-at": slot.at, "data-calls": slot.calls,
    });
    const end = new Date(start + 15 * 60000).toISOString();
    bar.append(svg("title", {}, `${time(slot.at)}\u2013${time(end)}: ${count(slot.calls)} call${slot.calls === 1 ? "" : "s"}`));
    node.append(bar);
  });
  node.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotH }));
  node.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
  return node;
}

function render() {
  if (!state) return;
  if (!format || format.key !== `${state.locale}|${state.timezone}`) format = formatters(state.locale, state.timezone);
  const t = state.tiles;
  $("day").textContent = `${format.day.format(new Date(state.now))} (${state.timezone})`;
  $("t-ringing").textContent = count(t.ringing);
  $("t-talking").textContent = count(t.talking);
  $("t-answered").textContent = count(t.answered);
  $("t-missed").textContent = count(t.missed);
  $("t-answer_rate").textContent = pct(t.answer_rate);
  $("t-service_level").textContent = pct(t.service_level);
  $("l-service_level").textContent = `Service level (${count(state.service_level_seconds)}s)`;
  $("t-ring_avg").textContent = secs(t.ring_avg);
  $("t-talk_avg").textContent = secs(t.talk_avg);
  level("ringing", t.ringing, "waiting");
  level("missed", t.missed, "missed");
  const lost = state.lost_after_seconds;
  const after = lost < 120 ? `${count(lost)}s` : `${count(Math.round(lost / 60))} min`;
  $("no-end").textContent = t.no_end_seen ? `\u00b7 ${count(t.no_end_seen)} no end seen (after ${after})` : "";

  $("desks").replaceChildren(...state.desks.map(deskCard));
  $("chart-zone").textContent = `(${state.timezone})`;
  $("chart").replaceChildren(chart(state.chart));

  $("recent").tBodies[0].replaceChildren(...state.recent.map((c) => {
    const row = el("tr");
    const caller = c.caller || "anonymous";
    row.append(el("td", {}, time(c.time)), el("td", { title: c.desk }, c.desk),
      el("td", {}, c.direction === "outbound" ? "out" : "in"), el("td", { title: caller }, caller),
      el("td", { title: c.contact || "" }, c.contact || ""),
      el("td", { class: c.outcome.replace(/ /g, "-") }, c.outcome), el("td", {}, secs(c.ring)), el("td", {}, secs(c.talk)));
    return row;
  }));
  if (window.renderCallbacks) window.renderCallbacks(state, { el, time, count, clock, seconds }); // callbacks.js
  tick();
}

function tick() {
  if (!state) return;
  $("now").textContent = format.time.format(new Date(Date.now() + skew));
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
