// The search page: reads q, mode and k from the URL (so a search can be shared), asks
// GET /search, and shows the hits. Every piece of data goes in with textContent, never as HTML.
"use strict";

const params = new URLSearchParams(window.location.search);
const field = (id) => document.getElementById(id);
const status = field("status");
const results = field("results");

function say(text, isError) {
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const given = (value) => value !== undefined && value !== null;

function where(hit) {
  // A record's key where the input had one, else its line; the source file first.
  const place = given(hit.key) ? `key ${hit.key}` : given(hit.line) ? `line ${hit.line}` : "";
  return [hit.source, place].filter(Boolean).join(", ");
}

function show(data) {
  results.replaceChildren();
  const hits = data.results.length ? data.results[0].hits : [];
  say(`${hits.length} hit${hits.length === 1 ? "" : "s"} (${data.mode}) from ${data.store.rows.toLocaleString()} rows`);
  for (const hit of hits) {
    const item = element("li", "hit");
    item.appendChild(element("div", "text", given(hit.text) ? hit.text : `(row ${hit.id}: stored without text)`));
    const meta = element("div", "meta");
    meta.appendChild(element("span", "score", `score ${Number(hit.score).toFixed(4)}`));
    meta.appendChild(document.createTextNode(" · "));
    meta.appendChild(element("span", "where", where(hit)));
    item.appendChild(meta);
    results.appendChild(item);
  }
}

async function run() {
  const q = params.get("q") || "";
  field("q").value = q;
  field("mode").value = params.get("mode") || "";
  field("k").value = params.get("k") || "10";
  if (!q.trim()) return;
  const query = new URLSearchParams({ q, k: field("k").value });
  if (field("mode").value) query.set("mode", field("mode").value);
  const headers = {};
  const key = sessionStorage.getItem("sbert-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  say("searching…", false);
  let response;
  try {
    response = await fetch(`/search?${query}`, { headers });
  } catch (error) {
    say(`the server did not answer (${error})`, true);
    return;
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) field("keybox").style.display = "block";
  if (!response.ok || data === null) {
    say(data && data.error ? data.error.message : `error ${response.status}`, true);
    return;
  }
  show(data);
}

field("keysave").addEventListener("click", () => {
  sessionStorage.setItem("sbert-key", field("key").value);
  field("keybox").style.display = "none";
  run();
});

run();
