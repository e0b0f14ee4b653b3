"""OpenAPI 3.1 description of the worker's HTTP API (served at `/openapi.json`): every operation names the bearer
scheme and the role it needs (`streams.web.guards.ROUTE_ROLES`)."""

from __future__ import annotations

from typing import Any

from schemas.records import FILTER_FIELDS
from streams.web.guards import HEALTH_DETAIL_ROLE, ROUTE_ROLES

_HIT = {
    "type": "object",
    "required": ["doc_id", "chunk", "score", "text"],
    "properties": {
        "doc_id": {"type": "string"}, "chunk": {"type": "integer"}, "score": {"type": "number"},
        "text": {"type": "string"}, "source": {"type": ["string", "null"]},
    },
}
_SEARCH_RESPONSE = {
    "type": "object",
    "required": ["query_id", "hits", "model_version", "index_version", "latency_ms", "cached"],
    "properties": {
        "query_id": {"type": "string", "description": "Logged with the answer; send feedback with it."},
        "query": {"type": "string"},
        "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        "model_version": {"type": "string"}, "index_version": {"type": "string"},
        "latency_ms": {"type": "number"}, "cached": {"type": "boolean"},
        "mode": {"enum": ["dense", "sparse", "hybrid"], "description": "The mode that answered."},
        "group": {"enum": ["chunk", "doc"]},
        "arm": {"enum": ["serving", "candidate", "interleave"], "description": "Which side of a live experiment "
                                                                               "answered."},
        "experiment": {"type": ["string", "null"], "description": "The experiment, when not the serving arm."},
    },
}
_SLICE_PARAMS = [{"name": "user_id", "in": "query", "schema": {"type": "string", "maxLength": 64},
                  "description": "Split experiments route by it (else by query_id)."},
                 {"name": "segment", "in": "query", "schema": {"type": "string", "maxLength": 64},
                  "description": "The caller's slice: online metrics are reported per segment."}]
_ADMIN = {"401": {"description": "No key, or a key not recognized"},
          "403": {"description": "The key lacks the admin role, or admin actions are disabled (neither a keys file "
                                 "nor GRISTMILL_ADMIN_TOKEN)"}}
_MODE = {"enum": ["dense", "sparse", "hybrid"], "description": "dense, BM25 (sparse), or both fused inside Qdrant "
                                                              "(hybrid, the default)."}
_GROUP = {"enum": ["chunk", "doc"], "default": "chunk", "description": "doc: at most one hit (the best chunk) per "
                                                                       "document; k counts documents."}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_PERMISSIONS = ("Answers only public documents and those whose acl names one of the API key's principals (public "
                "documents only without a key, when no keys file is configured, or with the admin token).")
_BOUND = {"type": ["number", "string"], "description": "a number, or an ISO-8601 date or time"}
_CONDITION = {"oneOf": [
    {"type": ["string", "integer", "number", "boolean"], "description": "exact match"},
    {"type": "object", "required": ["any"], "additionalProperties": False,
     "properties": {"any": {"type": "array", "minItems": 1, "maxItems": 256,
                            "items": {"type": ["string", "integer", "boolean"]}}}},
    {"type": "object", "required": ["exists"], "additionalProperties": False,
     "properties": {"exists": {"const": True}}},
    {"type": "object", "minProperties": 1, "additionalProperties": False,
     "properties": {"gt": _BOUND, "gte": _BOUND, "lt": _BOUND, "lte": _BOUND}},
]}
_FILTER = {"type": "object", "maxProperties": 16,
           "description": "Payload conditions, all to hold (AND), evaluated inside Qdrant: a field or "
                          "`metadata.<key>` to an exact value, `{\"any\": [...]}`, `{\"exists\": true}` or a "
                          "range of gt/gte/lt/lte over numbers or ISO-8601 dates.",
           "propertyNames": {"anyOf": [{"enum": sorted(FILTER_FIELDS)},
                                       {"pattern": "^metadata\\.[A-Za-z0-9_-]{1,64}$"}]},
           "additionalProperties": _CONDITION}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


_BAD = _json("Error", "Invalid request")

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gristmill worker API", "version": "1"},
    "paths": {
        "/search": {
            "get": {
                "summary": "Dense, sparse (BM25) or hybrid search over the serving index",
                "description": _PERMISSIONS,
                "parameters": [
                    {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                             "default": 10}},
                    {"name": "mode", "in": "query", "schema": _MODE},
                    {"name": "group", "in": "query", "schema": _GROUP},
                    *_SLICE_PARAMS,
                    *({"name": f, "in": "query", "schema": {"type": "string"}} for f in sorted(FILTER_FIELDS)),
                    {"name": "metadata.<key>", "in": "query", "schema": {"type": "string"},
                     "description": "exact match on a metadata key (`metadata.lang=de`; a key declared in "
                                    "GRISTMILL_METADATA_INDEXES as integer, float or bool is parsed as one)"},
                ],
                "responses": {"200": _json("SearchResponse", "Hits, best first"), "400": _BAD},
            },
            "post": {
                "summary": "Semantic search with a JSON body",
                "description": _PERMISSIONS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["q"],
                    "properties": {"q": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 1000},
                                   "filter": _FILTER, "mode": _MODE, "group": _GROUP,
                                   "user_id": {"type": "string"}, "segment": {"type": "string"}}}}}},
                "responses": {"200": _json("SearchResponse", "Hits, best first"), "400": _BAD},
            },
        },
        "/documents/{doc_id}": {"get": {
            "summary": "Ledger entry and chunks of one document",
            "description": "404, as for a document never indexed, when the key's principals may not read it.",
            "parameters": [{"name": "doc_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The document as indexed: version, deleted, source, title, metadata, "
                                                 "content_hash, model_version, indexed_at, chunks"},
                          "404": _json("Error", "Never indexed")},
        }},
        "/documents/versions": {"post": {
            "summary": "Indexed versions of many documents (null when never indexed, or not the key's to read)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["doc_ids"],
                "properties": {"doc_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 10000}}}}}},
            "responses": {"200": {"description": "doc_id -> version"}, "400": _BAD},
        }},
        "/evaluation": {"get": {
            "summary": "Online metrics per version, arm, slice and window; offline held-out metrics; experiments",
            "parameters": [
                {"name": "by", "in": "query", "schema": {"type": "string", "default": "version,arm"},
                 "description": "Comma-separated: version, arm, slice, window, experiment."},
                {"name": "since", "in": "query", "schema": {"type": "string", "default": "24h"},
                 "description": "1h, 30m, 7d, epoch seconds or an ISO time."},
                {"name": "slices", "in": "query", "schema": {"type": "string", "default": "length,source,segment"}},
                {"name": "window", "in": "query", "schema": {"type": "number"}, "description": "Seconds per window."},
            ],
            "responses": {"200": {"description": "rows (queries, judged, positive_rate with its 95% Wilson "
                                                 "interval, mrr@10, ndcg@10, latency p50/p99; shadow rows: "
                                                 "overlap@10, rank_correlation), offline, experiments"},
                          "400": _BAD}}},
        "/experiment": {"get": {"summary": "The latest experiment: state, decision, evidence, metrics per arm and "
                                           "slice; the ones before it",
                                "responses": {"200": {"description": "Experiment report"}}}},
        "/admin/promote": {"post": {
            "summary": "Roll out a registered version regardless of its evaluation",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}}}},
            "responses": {"202": {"description": "Requested on model-updates"}, "400": _BAD, **_ADMIN,
                          "404": _json("Error", "Unknown version")}}},
        "/admin/rollback": {"post": {
            "summary": "Serve the previous version (and its collection) again",
            "responses": {"202": {"description": "Requested on model-updates"}, **_ADMIN,
                          "409": _json("Error", "Nothing to roll back to")}}},
        "/admin/experiment": {"post": {
            "summary": "Start a live experiment of a registered version",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["version"],
                "properties": {"version": {"type": "string"}, "mode": {"enum": ["shadow", "split", "interleave"]},
                               "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}}}},
            "responses": {"202": {"description": "Requested on model-updates"}, "400": _BAD, **_ADMIN,
                          "404": _json("Error", "Unknown version"),
                          "409": _json("Error", "An experiment is live already, or the version serves")}}},
        "/admin/experiment/{action}": {"post": {
            "summary": "End the live experiment: stop, or promote its candidate now",
            "parameters": [{"name": "action", "in": "path", "required": True,
                            "schema": {"enum": ["stop", "promote"]}}],
            "responses": {"202": {"description": "Requested on model-updates"}, **_ADMIN,
                          "409": _json("Error", "No experiment is live")}}},
        "/health": {"get": {"summary": "Liveness; with a read key (or without a keys file) model, encoder provider, "
                                       "index size, rollout and trainer state",
                            "responses": {"200": {"description": "`{\"status\": \"ok\"|\"degraded\"}` alone for "
                                                                 "a caller without a read key when a keys file is "
                                                                 "configured; the full report otherwise"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                             "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        "/": {"get": {"summary": "Built-in live dashboard (HTML)", "responses": {"200": {"description": "Page"}}}},
        "/api/dashboard": {"get": {"summary": "The dashboard's figures, recent dead letters, queries and models",
                                   "responses": {"200": {"description": "Dashboard state"}}}},
    },
    "components": {
        "schemas": {"Hit": _HIT, "SearchResponse": _SEARCH_RESPONSE, "Error": _ERROR},
        "securitySchemes": {"apiKey": {
            "type": "http", "scheme": "bearer",
            "description": "An API key from GRISTMILL_API_KEYS_FILE (or GRISTMILL_ADMIN_TOKEN, which has every "
                           "role). The requirement lists the role the operation needs: search, read or admin. "
                           "Without a keys file only admin operations need a key (the admin token).",
        }},
    },
}


def _secure(document: dict[str, Any]) -> None:
    """Give every operation the bearer requirement and role of `ROUTE_ROLES` (open ones: none), and the answers a
    refused key gets."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            role = ROUTE_ROLES.get((method.upper(), path), "admin")
            if role is None:
                optional = path == "/health"
                operation["security"] = [{}, {"apiKey": [HEALTH_DETAIL_ROLE]}] if optional else []
                continue
            operation["security"] = [{"apiKey": [role]}]
            operation["x-gristmill-role"] = role
            operation["responses"].setdefault("401", {"description": "No API key, or one not recognized "
                                                                     "(WWW-Authenticate: Bearer)"})
            operation["responses"].setdefault("403", {"description": f"The key lacks the {role} role"})


_secure(OPENAPI)
