"""OpenAPI 3.1 description of the worker's HTTP API (served at `/openapi.json`)."""

from __future__ import annotations

from typing import Any

from schemas.records import FILTER_FIELDS

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
    },
}
_MODE = {"enum": ["dense", "sparse", "hybrid"], "description": "dense, BM25 (sparse), or both fused inside Qdrant "
                                                              "(hybrid, the default)."}
_GROUP = {"enum": ["chunk", "doc"], "default": "chunk", "description": "doc: at most one hit (the best chunk) per "
                                                                       "document; k counts documents."}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_FILTER = {"type": "object", "description": "Exact-match payload filter.",
           "propertyNames": {"enum": sorted(FILTER_FIELDS)},
           "additionalProperties": {"type": ["string", "integer", "number", "boolean"]}}


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
                "parameters": [
                    {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                             "default": 10}},
                    {"name": "mode", "in": "query", "schema": _MODE},
                    {"name": "group", "in": "query", "schema": _GROUP},
                    *({"name": f, "in": "query", "schema": {"type": "string"}} for f in sorted(FILTER_FIELDS)),
                ],
                "responses": {"200": _json("SearchResponse", "Hits, best first"), "400": _BAD},
            },
            "post": {
                "summary": "Semantic search with a JSON body",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["q"],
                    "properties": {"q": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 1000},
                                   "filter": _FILTER, "mode": _MODE, "group": _GROUP}}}}},
                "responses": {"200": _json("SearchResponse", "Hits, best first"), "400": _BAD},
            },
        },
        "/documents/{doc_id}": {"get": {
            "summary": "Ledger entry and chunks of one document",
            "parameters": [{"name": "doc_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The document as indexed"}, "404": _json("Error", "Never indexed")},
        }},
        "/documents/versions": {"post": {
            "summary": "Indexed versions of many documents (null when never indexed)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["doc_ids"],
                "properties": {"doc_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 10000}}}}}},
            "responses": {"200": {"description": "doc_id -> version"}, "400": _BAD},
        }},
        "/health": {"get": {"summary": "Model, encoder provider and index size",
                            "responses": {"200": {"description": "Healthy"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                             "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        "/": {"get": {"summary": "Built-in live dashboard (HTML)", "responses": {"200": {"description": "Page"}}}},
        "/api/dashboard": {"get": {"summary": "The dashboard's figures, recent dead letters, queries and models",
                                   "responses": {"200": {"description": "Dashboard state"}}}},
    },
    "components": {"schemas": {"Hit": _HIT, "SearchResponse": _SEARCH_RESPONSE, "Error": _ERROR}},
}
