// teachgraph's review page. Data from the run reaches the page as text nodes only (never as HTML);
// the graphs are SVG drawn by Graphviz on the server.
"use strict";

const POLL_MS = 2000;                       // how often the figures refresh while the run goes
const LIVE = new Set(["collecting", "running"]);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function plural(n, word) { return `${n} ${n === 1 ? word.replace(/s$/, "") : word}`; }

// ---------------------------------------------------------------- the run page

let lastFigures = null;

function showOverview(run) {
  document.getElementById("run-id").textContent = `run ${run.run}`;
  const c = run.counts;
  const rows = [
    ["skills", run.skills.join(", ")], ["model", `${run.model} (${run.endpoint})`], ["status", run.status],
    ["seeds", `${c.total} total: ${c.accepted} accepted, ${c.rejected} rejected, ${c.failed} failed, ${c.pending} pending`],
    ["samples", c.samples], ["LLM calls", c.llm_calls], ["tokens", c.tokens], ["cache hits", c.cache_hits],
    ["wall time", `${run.wall_seconds.toFixed(1)} s`],
    ["cost", run.cost === null || run.cost === undefined ? "not recorded" : `$${Number(run.cost).toFixed(4)}`],
    ["reviewed", `${run.reviews.accepted} accepted, ${run.reviews.rejected} rejected`],
  ];
  const table = document.getElementById("figures");
  table.replaceChildren(...rows.map(([k, v]) => el("tr", {"data-key": k}, el("td", {}, k), el("td", {}, v))));
  document.getElementById("live").textContent = LIVE.has(run.status) ? "live: refreshing" : "";
}

async function drawGraphs(run) {
  const box = document.getElementById("graphs");
  for (const skill of run.skills) {
    let section = box.querySelector(`section[data-skill="${CSS.escape(skill)}"]`);
    if (!section) {
      section = el("section", {"data-skill": skill}, el("h2", {}, `${skill}: graph`), el("div", {class: "graph"}));
      box.append(section);
    }
    const response = await fetch(`/api/graph/${encodeURIComponent(skill)}.svg`, {cache: "no-store"});
    const holder = section.querySelector(".graph");
    const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml").documentElement;
    holder.replaceChildren(document.importNode(svg, true));
    for (const node of holder.querySelectorAll("g.node")) {
      const name = node.querySelector("title").textContent;
      if (name === "__start__" || name === "__end__") continue;
      node.addEventListener("click", () => showNode(skill, name, node));
    }
  }
}

async function showNode(skill, name, group) {
  document.querySelectorAll("g.node.selected").forEach((g) => g.classList.remove("selected"));
  group.classList.add("selected");
  const info = await getJSON(`/api/nodes/${encodeURIComponent(skill)}/${encodeURIComponent(name)}`);
  document.getElementById("node-title").textContent = `${skill} · ${info.node}`;
  document.getElementById("node-role").textContent = info.role;
  const prompts = document.getElementById("node-prompts");
  prompts.replaceChildren();
  const names = Object.keys(info.prompts);
  if (!names.length) prompts.append(el("p", {}, "this node sends no prompt of its own"));
  for (const prompt of names) {
    const parts = info.prompts[prompt];
    prompts.append(el("h3", {}, `prompt: ${prompt}`));
    for (const part of ["system", "user", "assistant"]) {
      if (parts[part]) prompts.append(el("div", {}, el("em", {}, part)), el("pre", {class: `prompt-${part}`}, parts[part]));
    }
  }
  document.getElementById("node-draws").textContent = info.draws_from ? `draws from: ${info.draws_from}` : "";
  document.getElementById("node-items").replaceChildren(...info.items.map((item) =>
    el("li", {}, el("strong", {}, item.name), item.description ? ` — ${item.description}` : "")));
  document.getElementById("node-panel").hidden = false;
}

async function pollRun() {
  try {
    const run = await getJSON("/api/run");
    showOverview(run);
    const figures = JSON.stringify([run.nodes, run.edges, run.skills]);
    if (figures !== lastFigures) {
      lastFigures = figures;
      await drawGraphs(run);
      document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
    }
    if (LIVE.has(run.status)) setTimeout(pollRun, POLL_MS);
  } catch (error) {
    document.getElementById("live").textContent = `error: ${error.message}`;
    setTimeout(pollRun, POLL_MS * 3);
  }
}

// ---------------------------------------------------------------- the samples page

let selected = null;

function filterQuery() {
  const form = new FormData(document.getElementById("filters"));
  return new URLSearchParams([...form.entries()].filter(([, v]) => v)).toString();
}

function fillSelect(select, values) {
  const current = select.value;
  const keep = [...select.options].slice(0, 1);
  select.replaceChildren(...keep, ...values.map((v) => el("option", {value: v}, v)));
  select.value = values.includes(current) ? current : "";
}

async function loadItems() {
  const query = filterQuery();
  const result = await getJSON(`/api/samples?${query}`);
  const form = document.getElementById("filters");
  fillSelect(form.elements.skill, result.facets.skill);
  fillSelect(form.elements.task_type, result.facets.task_type);
  document.getElementById("count").textContent =
    `${plural(result.total, "items")}` + (result.total > result.items.length ? ` (first ${result.items.length} shown)` : "");
  const body = document.querySelector("#items tbody");
  body.replaceChildren(...result.items.map((item) => {
    const row = el("tr", {"data-id": item.id, class: item.id === selected ? "selected" : null},
      el("td", {class: `status-${item.status}`, title: item.why || ""}, item.status + (item.why ? ` (${item.why})` : "")),
      el("td", {class: "verdict"}, item.verdict || "-"), el("td", {}, item.skill || "-"),
      el("td", {}, item.task_type || "-"), el("td", {}, item.round ?? "-"), el("td", {class: "title"}, item.title));
    row.addEventListener("click", () => openLineage(item.id));
    return row;
  }));
  document.body.dataset.loaded = query;   // the filter the list now shows (tests wait for it)
}

function stepFigures(step) {
  const parts = [`${step.llm_calls} calls`, `${step.tokens} tokens`, `${step.seconds.toFixed(2)} s`];
  if (step.cache_hits) parts.push(`${step.cache_hits} cached`);
  if (step.next) parts.push(`next: ${step.next}`);
  return parts.join(" · ");
}

function stepBody(step) {
  const d = step.detail || {};
  const out = [];
  const text = (label, value) => { if (value !== undefined && value !== null && value !== "") {
    out.push(el("div", {}, el("em", {}, label)), el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 1)));
  } };
  if (d.rejected) text("rejected", d.rejected);
  if (d.error) text("error", d.error);
  text("transformed content", d.content);
  if (d.title || d.search_query) text("transformed", {title: d.title, search_query: d.search_query});
  text("note", d.transform_note);
  if (d.operation) text(`suggestion (${d.operation})`, d.suggestion);
  if (d.item) text(step.node === "edit" ? `edited instruction (round ${d.item.round})` : "seed instruction", d.item);
  if (d.history && d.history.length && step.node === "edit") text("changed", d.history[d.history.length - 1]);
  const last = d.answering && d.answering.last && d.answering.last[0];
  if (last) {   // the turn this step added: the answer, or the user turn that comes next
    const label = last.role === "assistant" ? "answer" : last.role === "tool" ? "tool result"
      : step.node === "follow_up" ? "user follow-up" : "next item's user turn";
    text(label, last.content || last.tool_calls);
  }
  if (d.answering && d.answering.feedback) text(`failed checks, correction ${d.answering.attempt}`, d.answering.feedback);
  if (d.answering && d.answering.checks && d.answering.checks.length) text("checks passed", d.answering.checks);
  if (d.samples) text("samples made", d.samples.join("\n"));
  if (d.refined_rejected) text("refined task dropped", d.refined_rejected);
  return out;
}

async function openLineage(id) {
  selected = id;
  document.querySelectorAll("#items tr.selected").forEach((r) => r.classList.remove("selected"));
  const row = document.querySelector(`#items tr[data-id="${CSS.escape(id)}"]`);
  if (row) row.classList.add("selected");
  const item = await getJSON(`/api/samples/${encodeURIComponent(id)}`);
  const seed = item.seed;
  document.getElementById("lineage-title").textContent = `${item.kind} ${item.id}`;
  const steps = [el("li", {class: "step", "data-node": "seed"},
    el("div", {class: "step-head"}, `seed chunk: ${seed.title || ""} `, el("span", {class: "figs"},
      `${seed.source} #${seed.chunk} · ${seed.kind} · task type ${seed.task_type || "-"} · ${seed.status}`)),
    el("pre", {}, seed.text))];
  for (const step of item.steps) {
    steps.push(el("li", {class: "step", "data-node": step.node},
      el("div", {class: "step-head"}, `${step.node} `, el("span", {class: `figs status-${step.outcome === "ok" ? "accepted" : step.outcome}`},
        `${step.outcome} · ${stepFigures(step)}`)), ...stepBody(step)));
  }
  if (seed.status !== "accepted" && (seed.reason || seed.error)) {
    steps.push(el("li", {class: "step", "data-node": "outcome"}, el("div", {class: "step-head"}, `seed ${seed.status} at ${seed.node || "-"}`),
      el("pre", {}, seed.reason || seed.error)));
  }
  const sample = item.sample;
  if (sample) {
    for (const r of sample.refinements) {
      steps.push(el("li", {class: "step", "data-node": "refinement"}, el("div", {class: "step-head"}, `refinement round ${r.round}: ${r.operation || "-"}`),
        el("pre", {}, [r.suggestion, r.changed ? `changed: ${r.changed.join(", ")}` : r.query, r.note].filter(Boolean).join("\n"))));
    }
    steps.push(el("li", {class: "step", "data-node": "sample"}, el("div", {class: "step-head"}, `the sample (round ${sample.round})`),
      ...sample.messages.map((m) => el("div", {}, el("em", {}, m.role), el("pre", {}, m.content || JSON.stringify(m.tool_calls))))));
    const verdicts = [...sample.checks.map((c) => `check ${c.check}: ${c.ok ? "ok" : "failed"} ${c.detail || ""}`),
      ...sample.gates.map((g) => `gate ${g.gate}: ${g.verdict} ${g.reason || ""}`)];
    steps.push(el("li", {class: "step", "data-node": "verdicts"}, el("div", {class: "step-head"}, "checks and gates"),
      el("pre", {}, verdicts.join("\n") || "none ran")));
  }
  document.getElementById("steps").replaceChildren(...steps);
  const box = document.getElementById("review-box");
  box.hidden = !sample;
  document.getElementById("note").value = item.review ? item.review.note : "";
  document.getElementById("verdict-state").textContent = item.review ? `verdict: ${item.review.verdict}` : "not reviewed";
  document.getElementById("lineage").hidden = false;
}

async function sendVerdict(verdict) {
  const response = await fetch(`/api/samples/${encodeURIComponent(selected)}/verdict`, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({verdict, note: document.getElementById("note").value}),
  });
  const body = await response.json();
  document.getElementById("verdict-state").textContent = response.ok ? `verdict: ${body.verdict} (saved)` : `error: ${body.error}`;
  await loadItems();
}

function startSamples() {
  const form = document.getElementById("filters");
  let typing = null;
  form.addEventListener("change", loadItems);
  form.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(loadItems, 250); });
  form.addEventListener("submit", (event) => { event.preventDefault(); loadItems(); });
  document.getElementById("accept").addEventListener("click", () => sendVerdict("accepted"));
  document.getElementById("reject").addEventListener("click", () => sendVerdict("rejected"));
  loadItems();
  const refresh = async () => {   // while the run goes on, new items appear
    try {
      const run = await getJSON("/api/run");
      document.getElementById("live").textContent = LIVE.has(run.status) ? "live: refreshing" : "";
      if (LIVE.has(run.status)) { await loadItems(); setTimeout(refresh, POLL_MS * 2); }
    } catch (error) { setTimeout(refresh, POLL_MS * 3); }
  };
  setTimeout(refresh, POLL_MS * 2);
}

if (document.body.dataset.page === "run") pollRun(); else startSamples();
