//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document of every route, written here as JSON.
//! [`ROUTES`] lists the routes and their methods; the router is built from the same paths
//! (a debug assertion), and a test holds the document, the list and the router's answers equal.

use serde_json::{json, Value};

/// Every route (axum's path syntax) and the methods it takes (GET routes answer HEAD too).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/commands", &["post"]),
    ("/api/v1/rpc", &["post"]),
    ("/api/v1/users", &["get"]),
    ("/api/v1/users/{id}", &["get"]),
    ("/api/v1/users/{id}/history", &["get"]),
    ("/api/v1/events", &["get"]),
    ("/api/v1/events/live", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/api/v1/openapi.json", &["get"]),
    ("/", &["get"]),
];

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn data(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {}}}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn id() -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": "the user's id (percent-encoded)", "schema": {"type": "string"}})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

/// The document.
pub fn document() -> Value {
    let bad = || problem("a bad parameter (validation_failed)");
    let unauthorized = || problem("no token, or a wrong one (unauthorized)");
    let not_found = || problem("no such user (not_found)");
    let etag = || json!({"ETag": {"description": "the aggregate's version, quoted", "schema": {"type": "string"}}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cqrs-node",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A CQRS + event-sourcing node over HTTP: the commands and queries of the JSON-lines protocol, the global log and its live feed."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "detail": {"type": "string"},
                        "code": {"type": "string"},
                        "current_version": {"type": "integer", "description": "for a version_conflict"}
                    }
                },
                "Command": {
                    "type": "object",
                    "required": ["type", "payload"],
                    "properties": {
                        "type": {"type": "string", "examples": ["CreateUser"]},
                        "payload": {"type": "object"},
                        "expectedVersion": {"type": "integer", "minimum": 0},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "commandId": {"type": "string", "minLength": 1, "maxLength": 200}
                    }
                },
                "CommandOk": {
                    "type": "object",
                    "properties": {
                        "success": {"const": true},
                        "events": {"type": "array", "items": {"type": "object", "properties": {
                            "eventType": {"type": "string"}, "aggregateId": {"type": "string"}}}}
                    }
                }
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/commands": {"post": {
                "summary": "Run a command",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": false, "description": "the command's commandId", "schema": {"type": "string"}},
                    {"name": "If-Match", "in": "header", "required": false, "description": "\"N\": the command's expectedVersion (a conflict is then 412)", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Command"}}}},
                "responses": {
                    "200": {"description": "done", "headers": etag(), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandOk"}}}},
                    "201": {"description": "a user created (Location: its URL)", "headers": etag(), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandOk"}}}},
                    "400": problem("malformed, unknown_command"),
                    "401": unauthorized(),
                    "404": problem("not_found"),
                    "409": problem("already_exists, version_conflict"),
                    "410": problem("deleted"),
                    "412": problem("version_conflict against If-Match"),
                    "413": problem("the body is over the limit"),
                    "422": problem("validation_failed, command_id_reused"),
                    "503": problem("the store failed; nothing was stored")
                }
            }},
            "/api/v1/rpc": {"post": {
                "summary": "One protocol message body in, the stdio node's reply body out",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": data("the reply body, in_reply_to included"),
                    "204": {"description": "a message without msg_id: carried out, not answered"},
                    "400": problem("not a JSON object (malformed)"),
                    "401": unauthorized(),
                    "413": problem("the body is over the limit")
                }
            }},
            "/api/v1/users": {"get": {
                "summary": "ListUsers, or ListUsersAtTime with at",
                "parameters": [
                    query("limit", "page size (default 100, at most 1000)", integer()),
                    query("after", "a user id: the page starts after it", json!({"type": "string"})),
                    query("at", "a time (RFC 3339): the list as it was then", json!({"type": "string", "format": "date-time"}))
                ],
                "responses": {"200": data("{users, next} (and at_time)"), "401": unauthorized(), "422": bad()}
            }},
            "/api/v1/users/{id}": {"get": {
                "summary": "GetUser; GetUserAtTime with at; GetUserAtVersion with version",
                "parameters": [
                    id(),
                    query("at", "a time (RFC 3339)", json!({"type": "string", "format": "date-time"})),
                    query("version", "a version", integer()),
                    {"name": "If-None-Match", "in": "header", "required": false, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "the user's state", "headers": etag(), "content": {"application/json": {"schema": {"type": "object"}}}},
                    "304": {"description": "not modified (If-None-Match)"},
                    "401": unauthorized(), "404": not_found(), "422": bad()
                }
            }},
            "/api/v1/users/{id}/history": {"get": {
                "summary": "GetUserHistory",
                "parameters": [id()],
                "responses": {"200": data("{id, version, events}"), "401": unauthorized(), "404": not_found()}
            }},
            "/api/v1/events": {"get": {
                "summary": "ReadEvents: a page of the global log",
                "parameters": [
                    query("after", "a position (default 0)", integer()),
                    query("limit", "page size (default 100, at most 1000)", integer())
                ],
                "responses": {"200": data("{events, next, head}"), "401": unauthorized(), "422": bad()}
            }},
            "/api/v1/events/live": {"get": {
                "summary": "The live feed of the global log (server-sent events)",
                "parameters": [
                    query("after", "start after this position (default: the head)", integer()),
                    {"name": "Last-Event-ID", "in": "header", "required": false, "description": "start after this position (wins over after)", "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "one SSE message per event: id, event (its type), data (as in ReadEvents)", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "401": unauthorized(), "422": bad()
                }
            }},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": data("{\"status\":\"ok\"}")}}},
            "/readyz": {"get": {"summary": "Readiness: the store answers", "security": [], "responses": {
                "200": data("{\"status\":\"ready\"}"), "503": problem("the store does not answer")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "the text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": unauthorized()}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": data("OpenAPI 3.1")}}},
            "/": {"get": {"summary": "The web console (a static page; it asks for the token)", "security": [], "responses": {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}}
        }
    })
}
