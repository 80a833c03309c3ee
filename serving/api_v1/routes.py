"""API v1's route table and the OpenAPI document generated from it.

Each `Route` names its method, path, the role it needs, and the pydantic models of its query, body and answer
(`serving.api_v1.schemas`). The server registers its handlers from this table, checks queries and bodies with
these models, and `openapi_document()` writes the document from the same table: the dashboard's types are
generated from that document (`python -m serving.api_v1.routes > dashboard/openapi.json`, then
`npm run api-types`), and a test fails when the committed document is not what the code generates.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.api_v1 import schemas as s

Access = Literal["public", "viewer", "operator"]
PREFIX = "/api/v1"
API_VERSION = "1.0.0"


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PUT"]
    path: str  # under PREFIX
    name: str  # the handler's name and the operationId
    summary: str
    access: Access
    answer: type[BaseModel] | None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    path_params: tuple[str, ...] = ()
    content_type: str = "application/json"

    @property
    def full_path(self) -> str:
        return PREFIX + self.path


ROUTES: tuple[Route, ...] = (
    Route("GET", "/me", "me", "The caller's role", "viewer", s.MeOut),
    Route("GET", "/overview", "overview", "Every market at a glance", "viewer", s.OverviewOut),
    Route(
        "GET", "/orders", "orders", "Orders, newest first, with fills and decision", "viewer", s.OrderPage, s.OrderQuery
    ),
    Route("GET", "/orders/{order_id}", "order", "One order", "viewer", s.OrderOut, path_params=("order_id",)),
    Route("GET", "/fills", "fills", "Fills, newest first", "viewer", s.FillPage, s.PageQuery),
    Route("GET", "/decisions", "decisions", "Decisions, newest first", "viewer", s.DecisionPage, s.DecisionQuery),
    Route("GET", "/chart", "chart", "Candles with fills and target positions", "viewer", s.ChartOut, s.ChartQuery),
    Route(
        "GET",
        "/performance",
        "performance",
        "Equity, drawdown, daily PnL",
        "viewer",
        s.PerformanceOut,
        s.PerformanceQuery,
    ),
    Route("GET", "/models", "models", "Champion, previous, candidates, backtest vs live", "viewer", s.ModelsOut),
    Route(
        "POST",
        "/models/rollback",
        "rollback",
        "Champion back to previous",
        "operator",
        s.RollbackOut,
        body=s.RollbackIn,
    ),
    Route("GET", "/quality", "quality", "Validation, quarantine, freshness", "viewer", s.QualityOut),
    Route("GET", "/control", "control", "The kill switch", "viewer", s.ControlOut),
    Route(
        "POST", "/control", "set_control", "Halt, reduce or resume", "operator", s.ControlChangeOut, body=s.ControlIn
    ),
    Route("GET", "/parameters", "parameters", "Trading parameters in force", "viewer", s.ParametersOut),
    Route(
        "PUT",
        "/parameters",
        "set_parameters",
        "Change trading parameters live",
        "operator",
        s.ParametersChangedOut,
        body=s.ParametersIn,
    ),
    Route(
        "PUT",
        "/markets/enabled",
        "set_market_enabled",
        "Enable or disable a market",
        "operator",
        s.ParametersChangedOut,
        body=s.MarketEnabledIn,
    ),
    Route("GET", "/ledger", "ledger", "Ledger entries, newest first", "viewer", s.LedgerPage, s.LedgerQuery),
    Route("GET", "/ledger/verify", "ledger_verify", "Verify the ledger", "viewer", s.LedgerVerifyOut),
    Route(
        "GET",
        "/stream",
        "stream",
        "Server-sent events: decisions, orders, fills, equity, state",
        "viewer",
        s.StreamEvent,
        content_type="text/event-stream",
    ),
    Route("GET", "/openapi.json", "openapi", "This document", "public", None),
)


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", []))
    out = []
    for name, declared in schema["properties"].items():
        prop = dict(declared)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        out.append(parameter)
    schemas.update(schema.get("$defs", {}))
    return out


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of API v1, from the route table and the models."""
    models: list[type[BaseModel]] = [s.ErrorOut]
    for route in ROUTES:
        models += [m for m in (route.answer, route.body) if m is not None]
    unique = list(dict.fromkeys(models))
    _, defs = models_json_schema(
        [(m, "serialization" if m.__name__.endswith(("Out", "Page", "Event")) else "validation") for m in unique],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for route in ROUTES:
        operation: dict[str, Any] = {"operationId": route.name, "summary": route.summary, "tags": [route.access]}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}} for name in route.path_params
        ]
        if route.query is not None:
            parameters += _query_parameters(route.query, schemas)
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
            }
        answer: dict[str, Any] = {"description": "OK"}
        if route.answer is not None:
            answer["content"] = {
                route.content_type: {"schema": {"$ref": f"#/components/schemas/{route.answer.__name__}"}}
            }
        else:
            answer["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {"200": answer}
        if route.access != "public":
            operation["security"] = [{"bearer": []}]
            responses["400"] = {"description": "Bad request (the field is named)", "content": error}
            responses["401"] = {"description": "Missing or wrong token", "content": error}
            responses["404"] = {"description": "Unknown market or row", "content": error}
            if route.access == "operator":
                responses["403"] = {"description": "The viewer token may not change anything", "content": error}
        operation["responses"] = responses
        paths.setdefault(route.full_path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CTA trading worker API",
            "version": API_VERSION,
            "description": "Read with the viewer or operator token; change state with the operator token.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def main() -> None:
    json.dump(openapi_document(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
