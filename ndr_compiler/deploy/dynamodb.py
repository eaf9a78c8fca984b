"""The project's DynamoDB tables: definitions, seed items, and creating them (idempotently)."""

from __future__ import annotations

from typing import Any

from ndr_compiler.models.project import Project


def table_definitions(project: Project) -> list[dict[str, Any]]:
    """create_table arguments for the lock, routing and parameters tables (on-demand billing)."""
    t = project.spec.tables

    def table(name: str, keys: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "TableName": name,
            "KeySchema": [{"AttributeName": k, "KeyType": kt} for k, kt in keys],
            "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
            "BillingMode": "PAY_PER_REQUEST",
        }

    return [
        table(t.locks, [("lock_key", "HASH")]),
        table(t.routing, [("org_id", "HASH")]),
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
            TableName=locks, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
    for table, items in seed_items(project).items():
        for item in items:
            client.put_item(TableName=table, Item=item)
    return created
