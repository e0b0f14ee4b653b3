"""The built-in live dashboard (`GET /`): the worker's own figures for a person without Grafana.

The page holds no data itself: it reads `/api/dashboard`. When that answers 401 (a keys file is configured) it asks
for an API key, keeps it in `sessionStorage` only (gone with the tab; never `localStorage`, never the URL) and sends
it as a bearer token on every request, admin actions included (the admin token works as a key too)."""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client import REGISTRY

from schemas import QualityReport
from streams.ml.evaluation import summarize
from streams.shared import Shared
from streams.state.store import PUBLIC, Access
from streams.topics import TopicNames


def _samples(metric: str) -> list[tuple[str, dict[str, str], float]]:
    for family in REGISTRY.collect():
        if family.name == metric:
            return [(s.name, s.labels, s.value) for s in family.samples]
    return []


def counter_by(metric: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, labels, value in _samples(metric):
        if name.endswith("_total"):
            totals[labels[label]] = totals.get(labels[label], 0.0) + value
    return totals


def gauge_sum(metric: str) -> float:
    return sum(value for _, _, value in _samples(metric))


def histogram_quantile(metric: str, q: float, **match: str) -> float | None:
    """Quantile from cumulative buckets (linear within a bucket), as PromQL's histogram_quantile; None if empty."""
    buckets: dict[float, float] = {}
    for name, labels, value in _samples(metric):
        if name.endswith("_bucket") and all(labels.get(k) == v for k, v in match.items()):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, buckets[bound]
    return lower


SHOWN_CHARS = 200  # the page shows at most this much of any text a client sent


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= limit else value[:limit] + "…"


def failed_checks(report: QualityReport | None, reader: Access) -> list[dict[str, Any]]:
    """The expectations the latest window of a topic failed, with what was observed: a number for anyone, other
    values (a suite may observe ids or sources) only for an internal reader."""
    if report is None:
        return []
    return [{"expectation": f.expectation, "column": f.column, "suite": report.suite,
             "observed": f.observed if reader.internal or f.observed is None
             or isinstance(f.observed, int | float | bool) else "withheld"} for f in report.failed[:5]]


def dashboard_state(shared: Shared, trains: bool, recent: int = 20, reader: Access = PUBLIC) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (`trains`: this worker runs the trainer agent). The recent
    queries' top hits and judged documents are shown only where `reader` may read them, and a dead-lettered
    document's key and value (its id and text, whoever its acl names) only to an internal reader (an admin)."""
    cache = counter_by("gristmill_query_cache", "result")
    withheld = set() if reader.internal else {"documents", TopicNames(shared.settings.namespace).documents,
                                              *(c.consumes for c in shared.sources)}  # a source's rows too
    lookups = sum(cache.values())
    alerts = [{"topic": labels["topic"], "kind": labels["kind"],
               "failed": failed_checks(shared.quality.get(labels["topic"]), reader) if labels["kind"] == "quality"
               else []}
              for _, labels, value in _samples("gristmill_alert") if value > 0]
    entries = [(entry, entry.response.get("hits") or [], [p for p in shared.pairs.for_query(entry.query_id)
                                                           if p.source == "feedback"])
               for entry in shared.query_log.recent(recent)]
    named = {hits[0]["doc_id"] for _, hits, _ in entries if hits} | {p.doc_id for *_, judged in entries for p in judged}
    states = {} if reader.internal or not named else shared.serving.current.store.get_documents(sorted(named))
    readable = named if reader.internal else {doc for doc, state in states.items() if reader.may_read(state.acl)}
    queries = []
    for entry, hits, judged in entries:
        top = hits[0] if hits and hits[0]["doc_id"] in readable else None
        queries.append({"query_id": shown(entry.query_id), "text": shown(entry.query.get("text")), "via": entry.via,
                        "answered_at": entry.answered_at, "top_hit": shown(top["doc_id"]) if top else None,
                        "score": top["score"] if top else None, "hits": len(hits),
                        "latency_ms": entry.response.get("latency_ms"), "cached": entry.response.get("cached"),
                        "feedback": [f"{'+' if p.kind == 'positive' else '-'}{p.doc_id}" for p in judged
                                     if p.doc_id in readable]})
    registry_versions = shared.registry.versions()
    current = shared.registry.current()
    serving = shared.serving.current
    trainings = {t["version"]: t for t in shared.pairs.trainings()}
    rollout = shared.serving.rollout
    return {
        "records_in": counter_by("gristmill_records_in", "topic"),
        "records_invalid": counter_by("gristmill_records_invalid", "topic"),
        "sources": {c.topic.removeprefix("source:"): c.counts.as_dict() for c in shared.sources},
        "index": {"documents": serving.store.count_documents(), "chunks": serving.store.count_chunks()},
        "queries": counter_by("gristmill_queries", "via"),
        "query_latency_ms": {q: (None if (v := histogram_quantile("gristmill_query_latency_seconds", q / 100))
                                 is None else round(v * 1000, 2)) for q in (50, 99)},
        "freshness_s": {q: histogram_quantile("gristmill_freshness_seconds", q / 100) for q in (50, 99)},
        "cache_hit_ratio": cache.get("hit", 0.0) / lookups if lookups else None,
        "consumer_lag": gauge_sum("gristmill_consumer_lag"),
        "agent_crashes": counter_by("gristmill_agent_crashes", "agent"),
        "degraded_agents": shared.health.degraded(),
        "alerts": alerts,
        "dead_letters": [{"topic": d.topic, "partition": d.partition, "offset": d.offset,
                          "key": None if d.topic in withheld else shown(d.key, 80),  # a document's key is its id
                          "value": None if d.topic in withheld else shown(d.value, 160),
                          "value_withheld": d.topic in withheld,
                          "value_encoding": d.value_encoding,
                          "value_truncated": d.value_truncated, "exception": d.exception,
                          "reasons": [shown(f"{e.loc}: {e.msg}") for e in d.errors[:5]], "ts": d.ts.isoformat()}
                         for d in list(shared.dead_letters.recent)[:recent]],
        "recent_queries": queries,
        "models": [{"version": m.version, "created_at": m.created_at, "metrics": m.metrics,
                    "base": m.lineage.get("base_version", m.lineage.get("base")), "pairs": m.lineage.get("pairs"),
                    "decision": trainings.get(m.version, {}).get("status"),
                    "reason": trainings.get(m.version, {}).get("reason"),
                    "serving": m.version == serving.model.version,
                    "current": current is not None and m.version == current.version}
                   for m in reversed(registry_versions)],
        "model_version": serving.encoder.version,
        "index_version": serving.searcher.index_version,
        "encoder_provider": serving.encoder.provider,
        "rollout": rollout.as_dict() if rollout else None,
        "trainer": shared.trainer.snapshot() if trains else None,
        "admin_enabled": shared.settings.admin_token is not None or shared.settings.api_keys_file is not None,
        "online": online_metrics(shared),
    }


def online_metrics(shared: Shared, window_s: float = 3600.0) -> dict[str, Any]:
    """The last hour (its latest 5,000 answers) per version and arm, and the model's latest experiment with its
    decision and evidence."""
    found = shared.evaluation.judged_answers(since=time.time() - window_s, limit=5_000)  # bounded per refresh
    rows = summarize(found.answers, found.judgements, ("version", "arm"))
    experiments = shared.evaluation.experiments(shared.settings.model_name, limit=1)
    return {"rows": rows, "experiment": experiments[0].as_dict() if experiments else None}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gristmill</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:12px 20px;display:flex;gap:16px;align-items:baseline}
 header h1{font-size:18px;margin:0} header span{opacity:.7}
 main{padding:16px 20px;display:grid;gap:16px}
 .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
 .card{background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 2px #0001}
 .card b{display:block;font-size:24px;margin-top:4px} .card small{color:#667}
 section{background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 2px #0001}
 h2{font-size:15px;margin:0 0 8px} table{border-collapse:collapse;width:100%}
 td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #eee;vertical-align:top;font-size:13px}
 .alert{color:#b00020;font-weight:600} .ok{color:#17803d} code{font-size:12px}
 #login{margin:16px 20px 0;background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 2px #0001}
 header button{margin-left:auto}
</style></head><body>
<header><h1>gristmill</h1><span id="model"></span><span id="updated"></span><span id="who"></span>
 <button id="forget" type="button" hidden>Forget the key</button></header>
<form id="login" hidden><label>API key <input id="key" type="password" autocomplete="off" size="32"></label>
 <button type="submit">Use this key</button> <span id="login-note"></span></form>
<main id="data">
 <div class="cards" id="cards"></div>
 <section><h2>Alerts</h2><div id="alerts"></div></section>
 <section><h2>Recent dead letters</h2><table><thead><tr><th>topic</th><th>partition@offset</th><th>key</th>
  <th>reasons</th><th>value as received</th></tr></thead><tbody id="deadletters"></tbody></table></section>
 <section><h2>Recent queries</h2><table><thead><tr><th>query</th><th>via</th><th>top hit</th><th>score</th>
  <th>hits</th><th>latency ms</th><th>cached</th><th>feedback</th></tr></thead><tbody id="queries"></tbody>
  </table></section>
 <section><h2>Online evaluation (last hour)</h2><p id="experiment"></p>
  <table><thead><tr><th>version</th><th>arm</th><th>queries</th><th>judged</th><th>positive rate</th><th>MRR@10</th>
  <th>nDCG@10</th><th>p50 ms</th><th>p99 ms</th><th>overlap@10</th></tr></thead><tbody id="online"></tbody></table>
 </section>
 <section><h2>Model versions</h2>
  <p id="flywheel"></p>
  <p id="admin"><button id="rollback" type="button">Roll back to the previous model</button>
   <span id="action"></span></p>
  <table><thead><tr><th>version</th><th>created</th><th>base</th><th>pairs</th><th>held-out nDCG@10</th>
  <th>MRR@10</th><th>decision</th><th>serving</th><th></th></tr></thead><tbody id="models"></tbody></table>
 </section>
</main>
<script>
const ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ESCAPES[c]);
const num = (v, d = 0) => v == null ? "-" : Number(v).toLocaleString(undefined, {maximumFractionDigits: d});
const sum = o => Object.values(o || {}).reduce((a, b) => a + b, 0);
function card(label, value, note) {
  return `<div class="card"><small>${esc(label)}</small><b>${value}</b><small>${esc(note || "")}</small></div>`;
}
function rows(id, items, render, empty) {
  document.getElementById(id).innerHTML = items.length ? items.map(render).join("")
    : `<tr><td colspan="8"><small>${empty}</small></td></tr>`;
}
const KEY = "gristmill-api-key";  // sessionStorage only: gone with the tab, never in localStorage or the URL
const storedKey = () => sessionStorage.getItem(KEY) || "";
const auth = () => storedKey() ? {"Authorization": "Bearer " + storedKey()} : {};
function askForKey(note) {
  document.getElementById("login").hidden = false;
  document.getElementById("login-note").textContent = note;
}
async function refresh() {
  const response = await fetch("/api/dashboard", {cache: "no-store", headers: auth()});
  document.getElementById("forget").hidden = !storedKey();
  if (response.status === 401 || response.status === 403) {
    const refused = (await response.json().catch(() => ({}))).error || "";
    if (response.status === 401 && storedKey()) sessionStorage.removeItem(KEY);  // revoked or mistyped
    document.getElementById("data").hidden = true;
    document.getElementById("who").textContent = "";
    askForKey(response.status === 401 ? `This dashboard needs an API key with the read role (${refused}).`
      : `This key cannot read the dashboard (${refused}).`);
    return;
  }
  const s = await response.json();
  document.getElementById("data").hidden = false;
  const canAdmin = s.admin_enabled && (!s.caller || s.caller.roles.includes("admin"));
  document.getElementById("who").textContent = s.caller ? `key ${s.caller.name} (${s.caller.roles.join(", ")})` : "";
  if (s.caller) document.getElementById("login").hidden = true;
  else if (s.admin_enabled) askForKey("Admin actions need a key with the admin role (or the admin token).");
  document.getElementById("model").textContent = `model ${s.model_version} on ${s.encoder_provider}`;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const r = s.records_in;
  document.getElementById("cards").innerHTML = [
    card("documents in", num(r.documents), `${num((s.records_invalid || {}).documents)} dead-lettered`),
    card("queries in", num(r.queries), `${num(sum(s.queries))} answered`),
    card("feedback in", num(r.feedback), `${num((s.records_invalid || {}).feedback)} dead-lettered`),
    ...Object.entries(s.sources || {}).map(([name, c]) => card(`source ${name} in`, num(c.records),
      `${num(c.mapped)} mapped · ${num(c.skipped)} skipped · ${num(c.deadlettered)} dead-lettered`)),
    card("indexed documents", num(s.index.documents), `${num(s.index.chunks)} chunks`),
    card("query latency p50", `${num(s.query_latency_ms["50"], 1)} ms`, `p99 ${num(s.query_latency_ms["99"], 1)} ms`),
    card("freshness p50", `${num(s.freshness_s["50"], 2)} s`, `p99 ${num(s.freshness_s["99"], 2)} s`),
    card("cache hit ratio", s.cache_hit_ratio == null ? "-" : `${num(100 * s.cache_hit_ratio, 1)} %`, ""),
    card("consumer lag", num(s.consumer_lag), "records behind"),
    card("agent crashes", num(sum(s.agent_crashes)), s.degraded_agents.length
      ? `degraded: ${s.degraded_agents.join(", ")}` : "all agents healthy"),
  ].join("");
  document.getElementById("alerts").innerHTML = s.alerts.length
    ? s.alerts.map(a => `<span class="alert">${esc(a.topic)}: ${esc(a.kind)}${(a.failed || []).map(f =>
        ` — ${esc(f.expectation)}${f.column ? ` (${esc(f.column)})` : ""}: observed ${esc(JSON.stringify(f.observed))}`
      ).join("")}</span>`).join(" · ")
    : '<span class="ok">no alerts</span>';
  rows("deadletters", s.dead_letters, d => `<tr><td>${esc(d.topic)}</td><td>${d.partition}@${d.offset}</td>
    <td>${esc(d.key)}</td><td>${d.reasons.map(esc).join("<br>")}</td>
    <td>${d.value_withheld ? "<em>withheld: a document (admin only)</em>" : `<code>${esc(d.value)}</code>`}</td></tr>`,
    "no dead letters yet");
  rows("queries", s.recent_queries, q => `<tr><td>${esc(q.text)}</td><td>${esc(q.via)}</td>
    <td>${esc(q.top_hit)}</td><td>${num(q.score, 3)}</td><td>${q.hits}</td><td>${num(q.latency_ms, 1)}</td>
    <td>${q.cached ? "yes" : "no"}</td><td>${q.feedback.map(esc).join(" ")}</td></tr>`,
    "no queries yet");
  const pair = (m, k) => m[`candidate_${k}`] == null ? "-"
    : `${num(m[`current_${k}`], 3)} → ${num(m[`candidate_${k}`], 3)}`;
  rows("models", s.models, m => `<tr><td>${esc(m.version)}</td><td>${esc(m.created_at.slice(0, 19))}</td>
    <td>${esc(m.base)}</td><td>${num(m.pairs)}</td><td>${pair(m.metrics, "nDCG@10")}</td>
    <td>${pair(m.metrics, "MRR@10")}</td><td title="${esc(m.reason)}">${esc(m.decision)}</td>
    <td>${m.serving ? "serving" : ""}</td><td>${m.serving ? "" : canAdmin
      ? `<button type="button" data-promote="${esc(m.version)}">Promote</button>` : ""}</td></tr>`, "no models");
  const trainer = s.trainer, rollout = s.rollout;
  const duration = t => t == null ? "?"
    : t >= 60 ? `${Math.floor(t / 60)}m ${Math.round(t % 60)}s` : `${Math.round(t)}s`;
  const phase = p => !p || !p.step ? "" : `: ${esc(p.phase)} (phase ${p.step}/${p.steps}) ${num(p.done)}/${
    num(p.total)} ${esc(p.unit)}, ETA ${duration(p.eta_s)}`;
  document.getElementById("flywheel").innerHTML = [
    `serving <b>${esc(s.model_version)}</b> (index ${esc(s.index_version)})`,
    trainer ? `trainer ${esc(trainer.state)}${trainer.pid ? ` (attempt ${trainer.attempt})` : ""}${
      trainer.waiting_for ? ` for ${esc(trainer.waiting_for)}` : ""}${phase(trainer.progress)}${
      trainer.last && trainer.last.status ? `; last ${esc(trainer.last.version || "")} ${esc(trainer.last.status)}`
      : ""}` : "",
    rollout ? `rollout ${esc(rollout.previous)} → ${esc(rollout.version)}: ${esc(rollout.state)} ${
      num(100 * rollout.progress)} %` : "",
  ].filter(Boolean).join(" · ");
  document.getElementById("admin").hidden = !canAdmin;
  rows("online", s.online.rows, o => `<tr><td>${esc(o.version)}</td><td>${esc(o.arm)}</td><td>${num(o.queries)}</td>
    <td>${num(o.judged)}</td><td>${num(o.positive_rate, 3)}</td><td>${num(o["mrr@10"], 3)}</td>
    <td>${num(o["ndcg@10"], 3)}</td><td>${num(o.latency_p50_ms, 1)}</td><td>${num(o.latency_p99_ms, 1)}</td>
    <td>${num(o["overlap@10"], 2)}</td></tr>`, "no answers in the last hour");
  const e = s.online.experiment, ev = (e && e.evidence) || {};
  document.getElementById("experiment").innerHTML = !e ? "no experiment yet" : `experiment <b>${esc(e.id)}</b>: ${
    esc(e.version)} vs ${esc(e.baseline)}, ${esc(e.mode)} at ${num(e.fraction, 2)} — <b>${esc(e.state)}</b>${
    e.decision ? ` (${esc(e.decision)}: ${esc(e.reason)})` : ""}; judged ${num(ev.judged_candidate)} / ${
    num(ev.judged_serving)}, positive rate ${num(ev.positive_rate_candidate, 3)} vs ${
    num(ev.positive_rate_serving, 3)}${ev.preference != null ? `, preference ${num(ev.preference, 3)}` : ""}`;
}
async function admin(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json", ...auth()},
    body: JSON.stringify(body || {})});
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    askForKey("Admin actions need a key with the admin role (or the admin token).");
  }
  document.getElementById("action").textContent = response.ok ? `${answer.requested} ${answer.version} requested`
    : answer.error || `refused (${response.status})`;
}
document.getElementById("login").onsubmit = event => {
  event.preventDefault();
  const input = document.getElementById("key");
  if (input.value.trim()) sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  refresh().catch(console.error);
};
document.getElementById("forget").onclick = () => {
  sessionStorage.removeItem(KEY);
  refresh().catch(console.error);
};
document.getElementById("rollback").onclick = () => admin("/admin/rollback");
document.getElementById("models").onclick = e => {
  if (e.target.dataset.promote) admin("/admin/promote", {version: e.target.dataset.promote});
};
refresh().catch(console.error);
setInterval(() => refresh().catch(console.error), 2000);
</script></body></html>
"""
