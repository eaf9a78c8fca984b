"""Plan and apply: every resource the project needs, compared with what is deployed, through boto3.

``plan`` reads only; ``apply`` creates and updates in dependency order and, when a change fails, reports
what it applied so that running again converges. See ``docs/design/deploy.md``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ndr_compiler import lock_table as lt
from ndr_compiler import semantic_diff
from ndr_compiler.compile import Compilation
from ndr_compiler.deploy.dynamodb import seed_items, table_definitions
from ndr_compiler.deploy.errors import CLIENT_CONFIG, explain, missing, while_roles_propagate
from ndr_compiler.deploy.placeholders import resolve
from ndr_compiler.expand.janitor import status_change_pattern
from ndr_compiler.expand.pipeline import default_pipeline_name
from ndr_compiler.lint.refs import find_cycle
from ndr_compiler.models.environment import Environment
from ndr_compiler.models.project import Project
from ndr_compiler.render.iam import ecr_repository_arn

SFN_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
EVENTS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
POLICY_NAME = "ndr-generated"
#: which environment made a resource: how a plan tells its orphans from another environment's resources
ENV_TAG = "ndr:environment"
ORPHAN = "in no spec any more; the deploy leaves it in place (`--prune` deletes it)"
#: the order --prune deletes orphans in: what starts executions first, roles last
PRUNE_ORDER = ("events-rule", "cloudwatch-alarm", "logs-metric-filter", "sns-topic", "state-machine",
               "sagemaker-pipeline", "iam-role")


@dataclass
class Resource:
    kind: str
    name: str
    desired: Any
    read: Callable[[], Any]
    create: Callable[[], None]
    update: Callable[[Any], None]
    describe_diff: Callable[[Any, Any], list[str]] | None = None
    drift: Callable[[Any], bool] | None = None
    #: what a create makes, for the plan (a new state machine's states and triggers, a rule's schedule)
    summary: str = ""


@dataclass
class Change:
    kind: str
    name: str
    action: str  # create | update | unchanged | orphaned (deployed, no longer in the specs; left in place)
    details: list[str] = field(default_factory=list)
    drift: bool = False
    resource: Resource | None = field(default=None, repr=False)
    remove: Callable[[], None] | None = field(default=None, repr=False)  # an orphan's deletion (--prune)

    def line(self) -> str:
        mark = " (drift: changed outside ndr)" if self.drift else ""
        return f"{self.action:9} {self.kind:20} {self.name}{mark}"


class DeployError(Exception):
    def __init__(self, message: str, applied: list[Change]):
        super().__init__(message)
        self.applied = applied


def _json(value: Any) -> Any:
    if isinstance(value, str):
        text = value
        if text.startswith("%7B") or text.startswith("%7b"):
            text = urllib.parse.unquote(text)
        return json.loads(text)
    return value


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _wait_active(ddb: Any, table: str, timeout_s: float = 1800, every_s: float = 5) -> None:
    """Until the table and every index of it are ACTIVE (an index is built in the background after
    UpdateTable; until then a Query of it fails)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        t = ddb.describe_table(TableName=table)["Table"]
        statuses = [t["TableStatus"], *(i.get("IndexStatus", "ACTIVE") for i in t.get("GlobalSecondaryIndexes", []))]
        if all(s == "ACTIVE" for s in statuses):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"table {table} is not ACTIVE after {timeout_s:.0f}s: {statuses}")
        time.sleep(every_s)


class Deployer:
    def __init__(
        self, compilation: Compilation, env: Environment, project: Project, session: Any, commit: str | None = None
    ):
        self.c = compilation
        self.env = env.spec
        self.env_name = env.metadata.name
        self.project = project
        self.session = session
        self.commit = commit or git_commit()
        self.clients: dict[str, Any] = {}
        e = self.env
        self.pipeline_names = {
            name: e.pipelines.get(name, f"{e.prefix}-{default_pipeline_name(name).removeprefix('ndr-')}")
            for name in compilation.pipelines
        }
        self.machine_names = {
            m.name: e.state_machines.get(m.name, f"{e.prefix}-{m.name.removeprefix('sfn_ndr_').replace('_', '-')}")
            for m in compilation.machines
        }
        self.values = self._values()

    # -- names and values ------------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(service, region_name=self.env.region, config=CLIENT_CONFIG)
        return self.clients[service]

    def role_name(self, what: str) -> str:
        return f"{self.env.prefix}-{what}"[:64]

    def role_arn(self, what: str, ref: Any) -> str:
        return ref.arn or f"arn:aws:iam::{self.env.account}:role/{self.role_name(what)}"

    def machine_arn(self, spec_name: str) -> str:
        return f"arn:aws:states:{self.env.region}:{self.env.account}:stateMachine:{self.machine_names[spec_name]}"

    def _values(self) -> dict[str, str]:
        e = self.env
        values = {"Region": e.region, "AccountId": e.account, **e.values}
        values["SageMakerPipelineRoleArn"] = self.role_arn("sagemaker-pipelines", e.roles.pipelines)
        for key, value in list(values.items()):  # the pipelines' role pulls only from the images' repositories
            if (arn := ecr_repository_arn(value)) is not None and not arn.startswith("$"):
                values[f"EcrRepositoryArn_{key}"] = arn
        for name, p in self.c.pipelines.items():
            for ph in p.placeholders:
                values[ph] = self.pipeline_names[name]
        for m in self.c.machines:
            values[f"StateMachineArn_{m.name}"] = self.machine_arn(m.name)
            values[f"StateMachineName_{m.name}"] = self.machine_names[m.name]
        return values

    def resolve_images(self, refuse_missing: bool) -> list[Any]:
        """Resolve every ECR image URI value to its digest (``ndr_compiler.deploy.images``); the definitions then
        reference ``repo@sha256:...``. A missing image raises ``ImageMissing`` when ``refuse_missing`` (the
        deploy), else keeps its tag (the plan shows it missing)."""
        from ndr_compiler import images as contexts
        from ndr_compiler.deploy import images

        kinds = images.image_kinds((s.processor.image_uri, s.processor.spark)
                                   for p in self.c.pipelines.values() for s in p.steps)
        def ecr(region: str) -> Any:
            if region == self.env.region:
                return self.client("ecr")
            return self.session.client("ecr", region_name=region, config=CLIENT_CONFIG)

        resolved = images.resolve(ecr, dict(self.env.values), kinds,
                                  lambda: contexts.tags(contexts.source_root()))
        if refuse_missing:
            images.refuse_missing(resolved, self.env_name)
        for r in resolved:
            self.values[r.value] = r.pinned if r.digest else r.tagged
        return resolved

    def artifact(self, relpath: str) -> str:
        for a in self.c.artifacts:
            if a.relpath == relpath:
                return resolve(a.text, self.values)
        raise KeyError(relpath)

    # -- resources -------------------------------------------------------------------------------------
    def resources(self) -> list[Resource]:
        out = [
            *self._tables(),
            *self._roles(),
            *self._event_bus(),
            *self._pipelines(),
            *self._machines(),
            *self._triggers(),
            *self._alarms(),
        ]
        return out

    def ensure_lock_table(self) -> str:
        """The project's lock table, created first if it is missing (the deploy lock lives in it)."""
        table = self.project.spec.tables.locks
        (resource,) = [r for r in self._tables() if r.kind == "dynamodb-table" and r.name == table]
        if resource.read() is None:
            while_roles_propagate(resource.create)
        return table

    def _tables(self) -> list[Resource]:
        ddb = self.client("dynamodb")
        out = []
        for d in table_definitions(self.project):
            name = d["TableName"]
            ttl = lt.EXPIRES_AT if name == self.project.spec.tables.locks else None
            indexes = sorted(i["IndexName"] for i in d.get("GlobalSecondaryIndexes", []))
            desired = {"KeySchema": d["KeySchema"], "BillingMode": d["BillingMode"], "TTL": ttl, "Indexes": indexes}

            def read(name: str = name) -> Any:
                try:
                    t = ddb.describe_table(TableName=name)["Table"]
                except ClientError as exc:
                    if missing(exc):
                        return None
                    raise
                ttl_desc = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
                on = ttl_desc.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
                return {
                    "KeySchema": t["KeySchema"],
                    "BillingMode": t.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
                    "TTL": ttl_desc.get("AttributeName") if on else None,
                    "Indexes": sorted(i["IndexName"] for i in t.get("GlobalSecondaryIndexes", [])),
                }

            def create(d: dict = d, ttl: str | None = ttl) -> None:
                ddb.create_table(**d)
                ddb.get_waiter("table_exists").wait(TableName=d["TableName"])
                if ttl:
                    ddb.update_time_to_live(
                        TableName=d["TableName"], TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
                    )

            def update(current: Any, d: dict = d, ttl: str | None = ttl) -> None:
                if current["KeySchema"] != d["KeySchema"]:
                    raise RuntimeError(f"table {d['TableName']} has another key schema; it must be replaced by hand")
                if current["BillingMode"] != d["BillingMode"]:
                    ddb.update_table(TableName=d["TableName"], BillingMode=d["BillingMode"])
                if ttl and current["TTL"] != ttl:
                    ddb.update_time_to_live(
                        TableName=d["TableName"], TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
                    )
                for index in d.get("GlobalSecondaryIndexes", []):  # one index per update, as DynamoDB wants
                    if index["IndexName"] not in current.get("Indexes", []):
                        _wait_active(ddb, d["TableName"])
                        ddb.update_table(TableName=d["TableName"], AttributeDefinitions=d["AttributeDefinitions"],
                                         GlobalSecondaryIndexUpdates=[{"Create": index}])
                _wait_active(ddb, d["TableName"])  # a query of an index still backfilling fails

            out.append(Resource("dynamodb-table", name, desired, read, create, update))
        for table, items in seed_items(self.project).items():
            for item in items:
                keys = [
                    k["AttributeName"]
                    for d in table_definitions(self.project)
                    if d["TableName"] == table
                    for k in d["KeySchema"]
                ]
                key = {k: item[k] for k in keys}

                def read_item(table: str = table, key: dict = key) -> Any:
                    try:
                        return ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
                    except ClientError as exc:
                        if missing(exc):
                            return None
                        raise

                def put(table: str = table, item: dict = item) -> None:
                    ddb.put_item(TableName=table, Item=item)

                label = "/".join(next(iter(v.values())) for v in key.values())
                out.append(
                    Resource("dynamodb-item", f"{table}[{label}]", item, read_item, put, lambda _c, put=put: put())
                )
        return out

    def _role(self, what: str, trust: dict, policy: dict) -> Resource:
        iam = self.client("iam")
        name = self.role_name(what)
        desired = {"Trust": trust, "Policy": policy}

        def read() -> Any:
            try:
                role = iam.get_role(RoleName=name)["Role"]
                doc = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
            except ClientError as exc:
                if missing(exc):
                    return None
                raise
            return {"Trust": _json(role["AssumeRolePolicyDocument"]), "Policy": _json(doc)}

        def create() -> None:
            try:
                iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": ENV_TAG, "Value": self.env.prefix}],
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "EntityAlreadyExists":
                    raise
            iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))

        def update(current: Any) -> None:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))

        return Resource("iam-role", name, desired, read, create, update)

    def _roles(self) -> list[Resource]:
        out = []
        roles = self.env.roles
        if roles.pipelines.arn is None and self.c.pipelines:
            out.append(
                self._role(
                    "sagemaker-pipelines", SAGEMAKER_TRUST, json.loads(self.artifact("iam/sagemaker_pipelines.json"))
                )
            )
        if roles.state_machines.arn is None:
            for m in self.c.machines:
                short = m.name.removeprefix("sfn_ndr_").replace("_", "-")
                out.append(self._role(f"sfn-{short}", SFN_TRUST, json.loads(self.artifact(f"iam/{m.name}.json"))))
        if roles.events.arn is None and (self.env.triggers.events or self.env.triggers.schedules
                                         or any(m.generated for m in self.c.machines)):
            targets = sorted(
                {t.state_machine for t in [*self.env.triggers.events.values(), *self.env.triggers.schedules.values()]}
                | {m.name for m in self.c.machines if m.generated}
            )
            arns = [self.machine_arn(t) for t in targets]
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "StartTriggeredWorkflows",
                        "Effect": "Allow",
                        "Action": ["states:StartExecution"],
                        "Resource": sorted(arns + [f"{a}:{self.env.alias}" for a in arns]),
                    }
                ],
            }
            out.append(self._role("events-invoke", EVENTS_TRUST, policy))
        return out

    def sfn_role_arn(self, spec_name: str) -> str:
        if self.env.roles.state_machines.arn:
            return self.env.roles.state_machines.arn
        return self.role_arn(
            f"sfn-{spec_name.removeprefix('sfn_ndr_').replace('_', '-')}", self.env.roles.state_machines
        )

    def _event_bus(self) -> list[Resource]:
        events = self.client("events")
        bus = self.project.spec.event_bus

        def read() -> Any:
            try:
                events.describe_event_bus(Name=bus)
            except ClientError as exc:
                if missing(exc):
                    return None
                raise
            return {"Name": bus}

        return [
            Resource("event-bus", bus, {"Name": bus}, read, lambda: events.create_event_bus(Name=bus), lambda _c: None)
        ]

    def _pipelines(self) -> list[Resource]:
        sm = self.client("sagemaker")
        out = []
        role = self.values["SageMakerPipelineRoleArn"]
        for spec_name in sorted(self.c.pipelines):
            name = self.pipeline_names[spec_name]
            definition = json.loads(self.artifact(f"pipelines/{spec_name}.json"))
            desired = {"Definition": definition, "RoleArn": role}
            tags = [
                {"Key": "ndr:spec", "Value": spec_name},
                {"Key": ENV_TAG, "Value": self.env.prefix},
                {"Key": "ndr:api-version", "Value": "ndr/v1"},
                {"Key": "ndr:git-commit", "Value": self.commit},
                {"Key": "ndr:definition-sha256", "Value": _sha(json.dumps(definition, sort_keys=True))},
            ]

            def read(name: str = name) -> Any:
                try:
                    d = sm.describe_pipeline(PipelineName=name)
                except ClientError as exc:
                    if missing(exc):
                        return None
                    raise
                return {"Definition": _json(d["PipelineDefinition"]), "RoleArn": d.get("RoleArn")}

            def create(name: str = name, definition: dict = definition, tags: list = tags) -> None:
                sm.create_pipeline(
                    PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=role, Tags=tags
                )

            def update(current: Any, name: str = name, definition: dict = definition, tags: list = tags) -> None:
                arn = sm.update_pipeline(PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=role)[
                    "PipelineArn"
                ]
                sm.add_tags(ResourceArn=arn, Tags=tags)

            def diff(old: Any, new: Any) -> list[str]:
                lines = semantic_diff.pipeline_changes(old["Definition"], new["Definition"])
                if old["RoleArn"] != new["RoleArn"]:
                    lines += ["~ RoleArn", *(f"  {d}" for d in semantic_diff.value_changes(old["RoleArn"],
                                                                                         new["RoleArn"], "RoleArn"))]
                return lines

            out.append(Resource("sagemaker-pipeline", name, desired, read, create, update, diff,
                                summary=semantic_diff.pipeline_summary(spec_name, definition)))
        return out

    def _children_first(self) -> list[str]:
        """Machines in an order where each one's children come first; a cycle (lint E206) is refused."""
        children = {m.name: [c.name for c in m.child_state_machines] for m in self.c.machines}
        cycle = find_cycle(children)
        if cycle is not None:
            raise DeployError("state machines start each other without end: " + " --> ".join(cycle), [])
        order: list[str] = []
        done: set[str] = set()
        for root in sorted(children):
            stack = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if name in done or name not in children:
                    continue
                if expanded:
                    done.add(name)
                    order.append(name)
                    continue
                stack.append((name, True))
                stack.extend((c, False) for c in reversed(children[name]) if c not in done)
        return order

    def _machines(self) -> list[Resource]:
        sfn = self.client("stepfunctions")
        out = []
        alias = self.env.alias
        triggers = semantic_diff.machine_triggers({self.env_name: self.env.model_dump(mode="json")}, self.c.machines)
        for spec_name in self._children_first():
            name = self.machine_names[spec_name]
            arn = self.machine_arn(spec_name)
            definition = json.loads(self.artifact(f"state_machines/{spec_name}.asl.json"))
            role = self.sfn_role_arn(spec_name)
            sha = _sha(json.dumps(definition, sort_keys=True))
            desired = {"Definition": definition, "RoleArn": role, "Alias": True}

            def read(arn: str = arn) -> Any:
                try:
                    d = sfn.describe_state_machine(stateMachineArn=arn)
                except ClientError as exc:
                    if missing(exc) or "DoesNotExist" in exc.response["Error"]["Code"]:
                        return None
                    raise
                aliases = sfn.list_state_machine_aliases(stateMachineArn=arn).get("stateMachineAliases", [])
                tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(resourceArn=arn).get("tags", [])}
                return {
                    "Definition": _json(d["definition"]),
                    "RoleArn": d["roleArn"],
                    "Alias": any(a["stateMachineAliasArn"].endswith(f":{alias}") for a in aliases),
                    "_sha": tags.get("ndr:definition-sha256"),
                }

            def point_alias(arn: str, version_arn: str) -> None:
                aliases = sfn.list_state_machine_aliases(stateMachineArn=arn).get("stateMachineAliases", [])
                routing = [{"stateMachineVersionArn": version_arn, "weight": 100}]
                existing = [
                    a["stateMachineAliasArn"] for a in aliases if a["stateMachineAliasArn"].endswith(f":{alias}")
                ]
                if existing:
                    sfn.update_state_machine_alias(stateMachineAliasArn=existing[0], routingConfiguration=routing)
                else:
                    sfn.create_state_machine_alias(name=alias, routingConfiguration=routing)

            def tag(arn: str, sha: str) -> None:
                sfn.tag_resource(
                    resourceArn=arn,
                    tags=[
                        {"key": "ndr:definition-sha256", "value": sha},
                        {"key": ENV_TAG, "value": self.env.prefix},
                        {"key": "ndr:git-commit", "value": self.commit},
                        {"key": "ndr:api-version", "value": "ndr/v1"},
                    ],
                )

            def create(name: str = name, definition: dict = definition, role: str = role, sha: str = sha) -> None:
                r = sfn.create_state_machine(
                    name=name, definition=json.dumps(definition), roleArn=role, type="STANDARD", publish=True
                )
                tag(r["stateMachineArn"], sha)
                point_alias(r["stateMachineArn"], r["stateMachineVersionArn"])

            def update(
                current: Any, arn: str = arn, definition: dict = definition, role: str = role, sha: str = sha
            ) -> None:
                r = sfn.update_state_machine(
                    stateMachineArn=arn, definition=json.dumps(definition), roleArn=role, publish=True
                )
                tag(arn, sha)
                point_alias(arn, r["stateMachineVersionArn"])

            def diff(old: Any, new: Any) -> list[str]:
                lines = semantic_diff.state_machine_changes(old["Definition"], new["Definition"])
                if old["RoleArn"] != new["RoleArn"]:
                    lines += ["~ roleArn", *(f"  {d}" for d in semantic_diff.value_changes(old["RoleArn"],
                                                                                         new["RoleArn"], "roleArn"))]
                if not old["Alias"]:
                    lines.append(f"+ alias {alias}")
                return lines

            def drift(current: Any, definition: dict = definition) -> bool:
                deployed = _sha(json.dumps(current["Definition"], sort_keys=True))
                return current.get("_sha") is not None and current["_sha"] != deployed

            summary = semantic_diff.state_machine_summary(spec_name, definition, triggers.get(spec_name, []))
            out.append(Resource("state-machine", name, desired, read, create, update, diff, drift, summary))
        return out

    def _triggers(self) -> list[Resource]:
        events = self.client("events")
        out = []
        role = self.role_arn("events-invoke", self.env.roles.events)
        rules: list[tuple[str, str, dict, dict]] = []
        for key, t in sorted(self.env.triggers.events.items()):
            target: dict[str, Any] = {
                "Id": "state-machine",
                "Arn": f"{self.machine_arn(t.state_machine)}:{self.env.alias}",
                "RoleArn": role,
            }
            if t.input_path:
                target["InputPath"] = t.input_path
            pattern = {"source": t.source, "detail-type": t.detail_type}
            rules.append(
                (f"{self.env.prefix}-{key}", t.event_bus, {"EventPattern": json.dumps(pattern, sort_keys=True)}, target)
            )
        for key, s in sorted(self.env.triggers.schedules.items()):
            target = {
                "Id": "state-machine",
                "Arn": f"{self.machine_arn(s.state_machine)}:{self.env.alias}",
                "RoleArn": role,
                "Input": json.dumps(s.input, sort_keys=True),
            }
            rules.append((f"{self.env.prefix}-{key}", "default", {"ScheduleExpression": s.schedule}, target))
        for janitor in (m for m in self.c.machines if m.generated):
            # every execution of the project's other machines that ends ABORTED, TIMED_OUT or FAILED
            watched = [self.machine_arn(m.name) for m in self.c.machines if not m.generated]
            target = {"Id": "state-machine", "Arn": f"{self.machine_arn(janitor.name)}:{self.env.alias}",
                      "RoleArn": role}
            pattern = json.dumps(status_change_pattern(watched), sort_keys=True)
            rules.append((f"{self.env.prefix}-{janitor.name.removeprefix('sfn_ndr_').replace('_', '-')}", "default",
                          {"EventPattern": pattern}, target))
        for name, bus, spec, target in rules:
            desired = {**spec, "State": "ENABLED", "Targets": [target]}

            def read(name: str = name, bus: str = bus) -> Any:
                try:
                    r = events.describe_rule(Name=name, EventBusName=bus)
                except ClientError as exc:
                    if missing(exc):
                        return None
                    raise
                targets = events.list_targets_by_rule(Rule=name, EventBusName=bus).get("Targets", [])
                got = {k: r[k] for k in ("EventPattern", "ScheduleExpression") if r.get(k)}
                if "EventPattern" in got:
                    got["EventPattern"] = json.dumps(json.loads(got["EventPattern"]), sort_keys=True)
                return {**got, "State": r.get("State"), "Targets": targets}

            def put(name: str = name, bus: str = bus, spec: dict = spec, target: dict = target) -> None:
                events.put_rule(Name=name, EventBusName=bus, State="ENABLED", **spec)
                events.put_targets(Rule=name, EventBusName=bus, Targets=[target])

            what = (f"schedule {spec['ScheduleExpression']}" if "ScheduleExpression" in spec
                    else f"pattern {semantic_diff.short(json.loads(spec['EventPattern']))}")
            summary = f"{what} -> {target['Arn'].rsplit(':stateMachine:', 1)[-1]}"
            out.append(Resource("events-rule", name, desired, read, put, lambda _c, put=put: put(), summary=summary))
        return out

    def _alarms(self) -> list[Resource]:
        """The environment's SNS topic, the quarantine-ratio metric filter and its CloudWatch alarms."""
        spec = self.env.alarms
        if not spec.enabled:
            return []
        sns, cw, logs = self.client("sns"), self.client("cloudwatch"), self.client("logs")
        e, prefix = self.env, self.env.prefix
        topic = f"{prefix}-alarms"
        topic_arn = f"arn:aws:sns:{e.region}:{e.account}:{topic}"

        def read_topic() -> Any:
            try:
                sns.get_topic_attributes(TopicArn=topic_arn)
            except ClientError as exc:
                if missing(exc) or exc.response["Error"]["Code"] == "NotFound":
                    return None
                raise
            subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn).get("Subscriptions", [])
            return {"Name": topic, "Email": sorted(x["Endpoint"] for x in subs if x["Protocol"] == "email")}

        def put_topic(_current: Any = None) -> None:
            sns.create_topic(Name=topic, Tags=[{"Key": ENV_TAG, "Value": prefix}])
            have = (read_topic() or {}).get("Email", [])
            for address in sorted(set(spec.email) - set(have)):
                sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=address)

        out = [Resource("sns-topic", topic, {"Name": topic, "Email": sorted(set(spec.email))}, read_topic, put_topic,
                        put_topic, summary=f"alarms of {prefix} -> {', '.join(spec.email) or 'no subscriber yet'}")]

        group, namespace = "/aws/sagemaker/ProcessingJobs", f"NDR/{prefix}"
        filter_name = f"{prefix}-quarantine-ratio"
        metric = {"metricName": "QuarantineRatio", "metricNamespace": namespace, "metricValue": "$.quarantine_ratio"}
        # the delta job's summary line (ndr_jobs.runtime.summary): one JSON object on stdout, in the job's log
        pattern = '{ $.job = "delta_builder" && $.quarantine_ratio = * }'
        desired_filter = {"filterPattern": pattern, "metricTransformations": [metric]}

        def read_filter() -> Any:
            found = logs.describe_metric_filters(logGroupName=group, filterNamePrefix=filter_name).get(
                "metricFilters", []) if self._log_group_exists(group) else []
            for f in found:
                if f["filterName"] == filter_name:
                    return {"filterPattern": f["filterPattern"], "metricTransformations": [
                        {k: t[k] for k in ("metricName", "metricNamespace", "metricValue")}
                        for t in f["metricTransformations"]]}
            return None

        def put_filter(_current: Any = None) -> None:
            if not self._log_group_exists(group):
                logs.create_log_group(logGroupName=group)
            logs.put_metric_filter(logGroupName=group, filterName=filter_name, **desired_filter)

        out.append(Resource("logs-metric-filter", filter_name, desired_filter, read_filter, put_filter, put_filter,
                            summary=f"QuarantineRatio in {namespace} from the delta job's summary"))

        def alarm(name: str, metric: str, ns: str, dimensions: dict[str, str], statistic: str, threshold: float,
                  comparison: str, periods: int = 1, missing_data: str = "notBreaching") -> Resource:
            params = {
                "AlarmName": name, "MetricName": metric, "Namespace": ns, "Statistic": statistic,
                "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dimensions.items())],
                "Period": 300, "EvaluationPeriods": periods, "DatapointsToAlarm": periods, "Threshold": threshold,
                "ComparisonOperator": comparison, "TreatMissingData": missing_data, "AlarmActions": [topic_arn],
                "ActionsEnabled": True,
            }

            def read(name: str = name) -> Any:
                found = cw.describe_alarms(AlarmNames=[name]).get("MetricAlarms", [])
                return {k: found[0].get(k) for k in params} if found else None

            def put(_current: Any = None, params: dict = params) -> None:
                cw.put_metric_alarm(**params, Tags=[{"Key": ENV_TAG, "Value": prefix}] if _current is None else [])

            verb = {"LessThanThreshold": "<", "GreaterThanThreshold": ">"}.get(comparison, ">=")
            return Resource("cloudwatch-alarm", name, params, read, put, put,
                            summary=f"{statistic} {metric} {verb} {threshold:g} over {periods * 5} min -> {topic}")

        for m in self.c.machines:
            arn, short = self.machine_arn(m.name), self.machine_names[m.name]
            for metric, what in (("ExecutionsFailed", "failed"), ("ExecutionsTimedOut", "timed-out"),
                                 ("ExecutionThrottled", "throttled")):
                out.append(alarm(f"{short}-{what}", metric, "AWS/States", {"StateMachineArn": arn}, "Sum", 1,
                                 "GreaterThanOrEqualToThreshold"))
        for spec_name in sorted(self.c.pipelines):
            name = self.pipeline_names[spec_name]
            out.append(alarm(f"{name}-failed", "ExecutionFailed", "AWS/Sagemaker/ModelBuildingPipeline",
                             {"PipelineName": name}, "Sum", 1, "GreaterThanOrEqualToThreshold"))
        for fresh in spec.freshness:
            short = self.machine_names[fresh.state_machine]
            out.append(alarm(f"{short}-stale", "ExecutionsSucceeded", "AWS/States",
                             {"StateMachineArn": self.machine_arn(fresh.state_machine)}, "Sum", 1,
                             "LessThanThreshold", periods=fresh.minutes // 5, missing_data="breaching"))
        out.append(alarm(f"{prefix}-quarantine-ratio", "QuarantineRatio", namespace, {}, "Maximum",
                         spec.max_quarantine_ratio, "GreaterThanThreshold"))
        return out

    def _log_group_exists(self, group: str) -> bool:
        found = self.client("logs").describe_log_groups(logGroupNamePrefix=group).get("logGroups", [])
        return any(g["logGroupName"] == group for g in found)

    def _orphaned_rules(self, wanted: set[str], orphaned_machines: set[str]) -> list[Change]:
        """This environment's rules that no spec wants any more, e.g. a removed schedule: the deploy never deletes,
        so they keep starting executions until deleted by hand. A rule is this environment's when it has its
        prefix and starts one of its state machines (another environment's prefix may extend this one's)."""
        events = self.client("events")
        buses = {"default", *(t.event_bus for t in self.env.triggers.events.values())}
        arn = f"arn:aws:states:{self.env.region}:{self.env.account}:stateMachine:"
        mine = {self.machine_arn(m.name) for m in self.c.machines} | {arn + name for name in orphaned_machines}
        out = []
        for bus in sorted(buses):
            try:
                pages = events.get_paginator("list_rules").paginate(NamePrefix=f"{self.env.prefix}-", EventBusName=bus)
                rules = [r for page in pages for r in page.get("Rules", [])]
            except ClientError as exc:
                if missing(exc):
                    continue
                raise
            for r in rules:
                if r["Name"] in wanted:
                    continue
                targets = events.list_targets_by_rule(Rule=r["Name"], EventBusName=bus).get("Targets", [])
                if any(t["Arn"] in mine or t["Arn"].rsplit(":", 1)[0] in mine for t in targets):
                    what = r.get("ScheduleExpression") or semantic_diff.short(_json(r.get("EventPattern") or "{}"))
                    ids = [t["Id"] for t in targets]

                    def remove(name: str = r["Name"], bus: str = bus, ids: list[str] = ids) -> None:
                        if ids:
                            events.remove_targets(Rule=name, EventBusName=bus, Ids=ids)
                        events.delete_rule(Name=name, EventBusName=bus)

                    out.append(Change("events-rule", r["Name"], "orphaned", [f"- {what}: {ORPHAN}"], remove=remove))
        return out

    def _orphans(self, wanted: dict[str, set[str]]) -> list[Change]:
        """State machines, pipelines and roles tagged with this environment (``ndr:environment`` = its prefix)
        that no spec names any more."""
        prefix, out = f"{self.env.prefix}-", []
        sfn, sm, iam = self.client("stepfunctions"), self.client("sagemaker"), self.client("iam")
        for page in sfn.get_paginator("list_state_machines").paginate():
            for m in page.get("stateMachines", []):
                arn = m["stateMachineArn"]
                if not m["name"].startswith(prefix) or m["name"] in wanted["state-machine"]:
                    continue
                tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(resourceArn=arn).get("tags", [])}
                if tags.get(ENV_TAG) == self.env.prefix:
                    out.append(Change("state-machine", m["name"], "orphaned", [f"- {ORPHAN}"],
                                      remove=lambda arn=arn: sfn.delete_state_machine(stateMachineArn=arn)))
        for page in sm.get_paginator("list_pipelines").paginate(PipelineNamePrefix=prefix):
            for pl in page.get("PipelineSummaries", []):
                name = pl["PipelineName"]
                if not name.startswith(prefix) or name in wanted["sagemaker-pipeline"]:
                    continue
                tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=pl["PipelineArn"]).get("Tags", [])}
                if tags.get(ENV_TAG) == self.env.prefix:
                    out.append(Change("sagemaker-pipeline", name, "orphaned", [f"- {ORPHAN}"],
                                      remove=lambda name=name: sm.delete_pipeline(PipelineName=name)))
        for page in iam.get_paginator("list_roles").paginate():
            for role in page.get("Roles", []):
                name = role["RoleName"]
                if not name.startswith(prefix) or name in wanted["iam-role"]:
                    continue
                tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name).get("Tags", [])}
                if tags.get(ENV_TAG) == self.env.prefix:

                    def remove(name: str = name) -> None:
                        for policy in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
                            iam.delete_role_policy(RoleName=name, PolicyName=policy)
                        iam.delete_role(RoleName=name)

                    out.append(Change("iam-role", name, "orphaned", [f"- {ORPHAN}"], remove=remove))
        return out

    def _orphaned_alarms(self, wanted: dict[str, set[str]]) -> list[Change]:
        """Alarms (and, with alarms turned off, the topic and the metric filter) of this environment that the
        specs no longer make: a removed machine's or pipeline's alarms would otherwise watch nothing for ever."""
        prefix, out = self.env.prefix, []
        cw, sns, logs = self.client("cloudwatch"), self.client("sns"), self.client("logs")
        for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{prefix}-"):
            for alarm in page.get("MetricAlarms", []):
                name = alarm["AlarmName"]
                if name in wanted["cloudwatch-alarm"]:
                    continue
                tags = {t["Key"]: t["Value"] for t in cw.list_tags_for_resource(
                    ResourceARN=alarm["AlarmArn"]).get("Tags", [])}  # fmt: skip
                if tags.get(ENV_TAG) == prefix:
                    out.append(Change("cloudwatch-alarm", name, "orphaned", [f"- {ORPHAN}"],
                                      remove=lambda name=name: cw.delete_alarms(AlarmNames=[name])))
        topic = f"{prefix}-alarms"
        if topic not in wanted["sns-topic"]:
            arn = f"arn:aws:sns:{self.env.region}:{self.env.account}:{topic}"
            try:
                tags = {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn).get("Tags", [])}
            except ClientError as exc:
                if not (missing(exc) or exc.response["Error"]["Code"] in ("NotFound", "ResourceNotFound")):
                    raise
                tags = {}
            if tags.get(ENV_TAG) == prefix:
                out.append(Change("sns-topic", topic, "orphaned", [f"- {ORPHAN}"],
                                  remove=lambda: sns.delete_topic(TopicArn=arn)))
        group, filter_name = "/aws/sagemaker/ProcessingJobs", f"{prefix}-quarantine-ratio"
        if filter_name not in wanted["logs-metric-filter"] and self._log_group_exists(group):
            found = logs.describe_metric_filters(logGroupName=group, filterNamePrefix=filter_name)
            if any(f["filterName"] == filter_name for f in found.get("metricFilters", [])):
                out.append(Change("logs-metric-filter", filter_name, "orphaned", [f"- {ORPHAN}"],
                                  remove=lambda: logs.delete_metric_filter(logGroupName=group,
                                                                           filterName=filter_name)))
        return out

    # -- plan and apply --------------------------------------------------------------------------------
    def plan(self) -> list[Change]:
        changes = []
        for r in self.resources():
            current = r.read()
            if current is None:
                changes.append(Change(r.kind, r.name, "create", [f"+ {r.summary}"] if r.summary else [], resource=r))
                continue
            comparable = (
                {k: v for k, v in current.items() if not k.startswith("_")} if isinstance(current, dict) else current
            )
            if comparable == r.desired:
                changes.append(Change(r.kind, r.name, "unchanged", resource=r))
                continue
            details = (
                r.describe_diff(comparable, r.desired)
                if r.describe_diff
                else [f"~ {line}" for line in semantic_diff.value_changes(comparable, r.desired)]
            )
            drift = bool(r.drift and r.drift(current))
            changes.append(Change(r.kind, r.name, "update", details, drift, resource=r))
        wanted = {kind: {c.name for c in changes if c.kind == kind} for kind in PRUNE_ORDER}
        orphans = self._orphans(wanted) + self._orphaned_alarms(wanted)
        gone = {c.name for c in orphans if c.kind == "state-machine"}
        orphans += self._orphaned_rules(wanted["events-rule"], gone)
        return changes + sorted(orphans, key=lambda c: (PRUNE_ORDER.index(c.kind), c.name))

    def prune(self, changes: list[Change], before: Callable[[Change], None] | None = None) -> list[Change]:
        """Delete the orphans of a plan, rules first (nothing starts a machine being deleted), roles last."""
        done: list[Change] = []
        for ch in sorted((c for c in changes if c.action == "orphaned" and c.remove),
                         key=lambda c: PRUNE_ORDER.index(c.kind)):
            if before:
                before(ch)
            try:
                ch.remove()  # type: ignore[misc]
            except Exception as exc:
                raise DeployError(f"delete {ch.kind} {ch.name} failed: {explain(exc) or exc}", done) from exc
            done.append(ch)
        return done

    def apply(self, changes: list[Change], before: Callable[[Change], None] | None = None) -> list[Change]:
        """Run the creates and updates in order (``before`` is told of each first, e.g. a progress line)."""
        applied: list[Change] = []
        for ch in changes:
            if ch.action not in ("create", "update") or ch.resource is None:
                continue
            if before:
                before(ch)
            try:
                if ch.action == "create":
                    while_roles_propagate(ch.resource.create)
                else:
                    resource = ch.resource
                    while_roles_propagate(lambda r=resource: r.update(r.read()))
            except Exception as exc:
                raise DeployError(f"{ch.action} {ch.kind} {ch.name} failed: {explain(exc) or exc}", applied) from exc
            applied.append(ch)
        return applied
