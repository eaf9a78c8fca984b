"""The project's DynamoDB tables: definitions, seed items, and creating them (idempotently)."""

from __future__ import annotations

from typing import Any

from ndr_compiler import lock_table as lt
from ndr_compiler.models.project import Project


def table_definitions(project: Project) -> list[dict[str, Any]]:
    """create_table arguments for the lock, routing and parameters tables (on-demand billing), with the
    indexes the state machines query: the lock table by owner (the janitor), the routing table by project
    (a backfill request names a project)."""
    t = project.spec.tables

    def table(name: str, keys: list[tuple[str, str]], indexes: dict[str, str] | None = None) -> dict[str, Any]:
        attributes = dict.fromkeys([k for k, _ in keys] + list((indexes or {}).values()))
        out: dict[str, Any] = {
            "TableName": name,
            "KeySchema": [{"AttributeName": k, "KeyType": kt} for k, kt in keys],
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if indexes:
            out["GlobalSecondaryIndexes"] = [
                {"IndexName": index, "KeySchema": [{"AttributeName": attr, "KeyType": "HASH"}],
                 "Projection": {"ProjectionType": "ALL"}}
                for index, attr in sorted(indexes.items())
            ]
        return out

    return [
        table(t.locks, [(lt.KEY, "HASH")], {lt.OWNER_INDEX: lt.OWNER}),
        table(t.routing, [("org_id", "HASH")], {lt.ROUTING_PROJECT_INDEX: "project_name"}),
        table(t.parameters, [("project_name", "HASH"), ("feature_spec_version", "RANGE")]),
    ]


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    return {"S": str(value)}


def seed_items(project: Project) -> dict[str, list[dict[str, Any]]]:
    """Items to put, by table name, in DynamoDB's typed form."""
    t = project.spec.tables
    routing = [{k: _attr(v) for k, v in sorted(item.model_dump().items())} for item in project.spec.routing]
    params = []
    for p in project.spec.parameters:
        item = {"project_name": _attr(p.project_name), "feature_spec_version": _attr(p.feature_spec_version)}
        item.update({k: _attr(v) for k, v in sorted(p.values.items())})
        params.append(item)
    return {t.routing: routing, t.parameters: params}


def ensure_tables(client: Any, project: Project) -> list[str]:
    """Create missing tables (lock table with TTL on expires_at) and put the seed items; returns created."""
    existing = set(client.list_tables().get("TableNames", []))
    created = []
    for definition in table_definitions(project):
        name = definition["TableName"]
        if name not in existing:
            client.create_table(**definition)
            client.get_waiter("table_exists").wait(TableName=name)
            created.append(name)
    locks = project.spec.tables.locks
    ttl = client.describe_time_to_live(TableName=locks).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=locks, TimeToLiveSpecification={"Enabled": True, "AttributeName": lt.EXPIRES_AT}
        )
    for table, items in seed_items(project).items():
        for item in items:
            client.put_item(TableName=table, Item=item)
    return created
