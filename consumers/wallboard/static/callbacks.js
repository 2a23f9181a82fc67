// tcx-bridge wallboard: the Callbacks panel (state.callbacks, state.callback_tiles), drawn by app.js's render().
// The Call back button appears only when /api/dial answers: a browser holding the dial token
// (wallboard_dial_token); each POST carries the CSRF token that answer gave.
"use strict";
let csrf = null; // null: no dial token here, no buttons
let pending = {}; // task id -> the dial state the POST answered, until the snapshot says more
let chosen = {}; // task id -> the desk picked in its list (kept across snapshots)

fetch("/api/dial", { credentials: "same-origin" })
  .then((answer) => answer.ok ? answer.json() : null)
  .then((found) => { csrf = found && found.csrf; if (window.lastState) window.renderCallbacks(window.lastState, window.lastTools); })
  .catch(() => { csrf = null; });

function callBack(task, desk, button, note) {
  button.disabled = true;
  button.textContent = "dialing\u2026";
  fetch(`/api/callbacks/${task.id}/dial`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(desk ? { desk } : {}),
  }).then(async (answer) => {
    if (!answer.ok) { note.textContent = (await answer.text()).trim(); button.disabled = false; button.textContent = "Call back"; return; }
    pending[task.id] = (await answer.json()).dial;
  });
}

window.renderCallbacks = function (state, tools) {
  window.lastState = state; window.lastTools = tools;
  const { el, time, count, clock, seconds } = tools;
  const tiles = state.callback_tiles || {};
  document.getElementById("t-callbacks_open").textContent = count(tiles.callbacks_open);
  const median = tiles.callback_median;
  document.getElementById("t-callback_median").textContent = median === null || median === undefined ? "-" : clock(median);
  document.getElementById("cb-note").textContent = tiles.callbacks_overdue ? `\u00b7 ${count(tiles.callbacks_overdue)} overdue` : "";
  const desks = (state.desks || []).map((d) => d.desk);
  document.getElementById("callbacks").tBodies[0].replaceChildren(...(state.callbacks || []).map((task) => {
    const dial = task.dial || pending[task.id] || "";
    if (task.dial) delete pending[task.id];
    const row = el("tr", { "data-task": task.id, "data-state": task.state, "data-dial": dial });
    const who = task.number || "";
    row.append(el("td", {}, time(task.first_missed_at)), el("td", { title: who }, who),
      el("td", { title: task.contact || "" }, task.contact || ""), el("td", {}, count(task.missed)),
      el("td", {}, clock(seconds(task.first_missed_at))), el("td", {}, time(task.due_at)),
      el("td", { class: task.state }, dial && task.state !== "reached" ? `${task.state} \u00b7 ${dial}` : task.state),
      el("td", { title: task.desk || "" }, task.reached_by || task.desk || ""));
    const cell = el("td", { class: "action" });
    const open = ["open", "due", "overdue"].includes(task.state);
    if (csrf && open) {
      const choice = el("select", { "aria-label": "desk" });
      const picked = chosen[task.id] || task.desk;
      for (const desk of desks) choice.append(el("option", desk === picked ? { value: desk, selected: "" } : { value: desk }, desk));
      choice.addEventListener("change", () => { chosen[task.id] = choice.value; });
      const busy = ["dialing", "dialed", "confirmed"].includes(dial);
      const button = el("button", { class: "call-back" }, busy ? dial : "Call back");
      button.disabled = busy;
      const note = el("span", { class: "note" });
      button.addEventListener("click", () => callBack(task, choice.value, button, note));
      cell.append(choice, button, note);
    }
    row.append(cell);
    return row;
  }));
};
