"""Deploy and plan against moto in server mode, over real HTTP with boto3 (AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from click.testing import CliRunner

from ndr_compiler.cli import main
from tests.conftest import GENERATED, SPECS, image_tree, put_images

ACCOUNT = "123456789012"


logging.getLogger("werkzeug").setLevel(logging.ERROR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: which image each image value of dev.yaml names (the deploy derives it from the processors that use the value)
KINDS = {"NdrSparkProcessingImageUri": "spark", "NdrProcessingImageUri": "python"}


def dev_values() -> dict[str, str]:
    return yaml.safe_load((SPECS / "environments" / "dev.yaml").read_text())["spec"]["values"]


@pytest.fixture
def tree(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The source tree images are built from, a fresh copy (NDR_SOURCE_ROOT)."""
    tree = image_tree(tmp_path_factory.mktemp("tree"))
    monkeypatch.setenv("NDR_SOURCE_ROOT", str(tree))
    return tree


@pytest.fixture
def bare_aws(moto_server: str, tree: Path) -> str:
    """moto with no image pushed."""
    return moto_server


@pytest.fixture
def aws(bare_aws: str, tree: Path) -> str:
    """moto with the images dev.yaml names pushed to its ECR, as `ndr-compile images push` does."""
    put_images(dev_values(), KINDS, tree)
    return bare_aws


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def deploy() -> tuple[int, str]:
    return run("specs/", "--deploy", "--env", "dev")


def sfn():
    return boto3.client("stepfunctions", region_name="us-east-1")


def test_first_deploy_creates_everything_then_nothing_changes(aws: str, workdir: Path):
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    assert "0 to update, 0 unchanged" in out
    code, out = deploy()
    assert code == 0, out
    assert "deployed to dev:" in out
    # the resources exist, with placeholders resolved
    machines = {m["name"]: m["stateMachineArn"] for m in sfn().list_state_machines()["stateMachines"]}
    assert "ndr-dev-15m-features-inference" in machines
    definition = sfn().describe_state_machine(stateMachineArn=machines["ndr-dev-15m-features-inference"])["definition"]
    assert "${" not in definition
    assert '"PipelineName": "ndr-dev-features-15m"' in definition
    assert f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:ndr-dev-prediction-publication" in definition
    aliases = sfn().list_state_machine_aliases(stateMachineArn=machines["ndr-dev-15m-features-inference"])
    assert [a["stateMachineAliasArn"].rsplit(":", 1)[1] for a in aliases["stateMachineAliases"]] == ["live"]
    sm = boto3.client("sagemaker", region_name="us-east-1")
    pipeline = sm.describe_pipeline(PipelineName="ndr-dev-features-15m")
    assert "${" not in pipeline["PipelineDefinition"]
    assert pipeline["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/ndr-dev-sagemaker-pipelines"
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    assert ddb.describe_time_to_live(TableName="ndr-idempotency-locks")["TimeToLiveDescription"]["AttributeName"] \
        == "expires_at"
    assert ddb.get_item(TableName="ndr-project-routing", Key={"org_id": {"S": "acme"}})["Item"]["project_name"] \
        == {"S": "ndr-prod"}
    events = boto3.client("events", region_name="us-east-1")
    rule = events.describe_rule(Name="ndr-dev-batch-completed")
    assert json.loads(rule["EventPattern"]) == {"detail-type": ["Batch Completed"], "source": ["ndr.ingestion"]}
    (target,) = events.list_targets_by_rule(Rule="ndr-dev-batch-completed")["Targets"]
    assert target["Arn"].endswith(":stateMachine:ndr-dev-15m-features-inference:live")
    assert events.describe_rule(Name="ndr-dev-monthly-baselines")["ScheduleExpression"] == "cron(0 2 1 * ? *)"
    # deploying unchanged specs again changes nothing
    code, out = deploy()
    assert code == 0 and "plan: 0 to create, 0 to update" in out and "deployed to dev: 0 changed" in out


def test_iam_policies_name_only_what_each_role_touches(aws: str, workdir: Path):
    assert deploy()[0] == 0
    iam = boto3.client("iam", region_name="us-east-1")
    doc = iam.get_role_policy(RoleName="ndr-dev-sfn-training-orchestrator", PolicyName="ndr-generated")
    policy = doc["PolicyDocument"] if isinstance(doc["PolicyDocument"], dict) else json.loads(doc["PolicyDocument"])
    resources = sorted(r for s in policy["Statement"] for r in s["Resource"])
    assert f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/ndr-dev-if-training" in resources
    assert not any("features-15m" in r for r in resources)  # (the bus: it announces a rejected request)
    assert all("*" not in r or r.endswith("/execution/*") for r in resources)
    (locks,) = [s for s in policy["Statement"] if any(r.endswith("table/ndr-idempotency-locks") for r in s["Resource"])]
    assert locks["Action"] == ["dynamodb:PutItem"]  # its pipeline-run record, for the janitor
    (watch,) = [s for s in policy["Statement"] if s["Sid"] == "WatchPipelineExecutions"]
    assert watch["Action"] == ["sagemaker:DescribePipelineExecution", "sagemaker:StopPipelineExecution"]


def test_the_lock_janitor_is_deployed_with_its_rule_and_indexes(aws: str, workdir: Path):
    assert deploy()[0] == 0
    machines = {m["name"]: m["stateMachineArn"] for m in sfn().list_state_machines()["stateMachines"]}
    assert "ndr-dev-lock-janitor" in machines
    events = boto3.client("events", region_name="us-east-1")
    pattern = json.loads(events.describe_rule(Name="ndr-dev-lock-janitor")["EventPattern"])
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail"]["status"] == ["ABORTED", "FAILED", "TIMED_OUT"]
    watched = pattern["detail"]["stateMachineArn"]
    assert len(watched) == 5 and machines["ndr-dev-15m-features-inference"] in watched
    assert machines["ndr-dev-lock-janitor"] not in watched
    (target,) = events.list_targets_by_rule(Rule="ndr-dev-lock-janitor")["Targets"]
    assert target["Arn"] == machines["ndr-dev-lock-janitor"] + ":live"
    iam = boto3.client("iam", region_name="us-east-1")
    doc = iam.get_role_policy(RoleName="ndr-dev-events-invoke", PolicyName="ndr-generated")["PolicyDocument"]
    invoke = doc if isinstance(doc, dict) else json.loads(doc)
    assert machines["ndr-dev-lock-janitor"] + ":live" in invoke["Statement"][0]["Resource"]
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    indexes = ddb.describe_table(TableName="ndr-idempotency-locks")["Table"]["GlobalSecondaryIndexes"]
    assert [i["IndexName"] for i in indexes] == ["owner_execution"]
    routing = ddb.describe_table(TableName="ndr-project-routing")["Table"]["GlobalSecondaryIndexes"]
    assert [i["IndexName"] for i in routing] == ["project_name"]


def test_an_index_missing_from_a_deployed_table_is_added(aws: str, workdir: Path):
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName="ndr-idempotency-locks", KeySchema=[{"AttributeName": "lock_key", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "lock_key", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")  # as an earlier release created it
    code, out = run("plan", "--env", "dev")
    assert "update    dynamodb-table       ndr-idempotency-locks" in out, out
    assert deploy()[0] == 0
    indexes = ddb.describe_table(TableName="ndr-idempotency-locks")["Table"]["GlobalSecondaryIndexes"]
    assert [i["IndexName"] for i in indexes] == ["owner_execution"]


def test_update_after_a_spec_change_publishes_a_version_and_moves_the_alias(aws: str, workdir: Path):
    assert deploy()[0] == 0
    arn = next(m["stateMachineArn"] for m in sfn().list_state_machines()["stateMachines"]
               if m["name"] == "ndr-dev-training-orchestrator")
    before = sfn().describe_state_machine_alias(stateMachineAliasArn=f"{arn}:live")["routingConfiguration"]
    spec = workdir / "specs" / "state_machines" / "sfn_ndr_training_orchestrator.yaml"
    spec.write_text(spec.read_text().replace("every_seconds: 120", "every_seconds: 300"))
    code, out = deploy()
    assert code == 1 and "refusing to deploy" in out  # generated/ is stale until recompiled
    assert run("specs/")[0] == 0
    code, out = run("plan", "--env", "dev")
    assert "update    state-machine        ndr-dev-training-orchestrator" in out
    assert "~ state `WaitBeforeTrainingDescribe`: Seconds" in out
    assert "plan: 0 to create, 1 to update" in out
    code, out = deploy()
    assert code == 0 and "deployed to dev: 1 changed" in out
    after = sfn().describe_state_machine_alias(stateMachineAliasArn=f"{arn}:live")["routingConfiguration"]
    assert after != before
    assert '"Seconds": 300' in sfn().describe_state_machine(stateMachineArn=arn)["definition"]


def test_out_of_band_change_shows_as_drift_and_deploy_repairs_it(aws: str, workdir: Path):
    assert deploy()[0] == 0
    arn = next(m["stateMachineArn"] for m in sfn().list_state_machines()["stateMachines"]
               if m["name"] == "ndr-dev-monthly-fg-b-baselines")
    definition = json.loads(sfn().describe_state_machine(stateMachineArn=arn)["definition"])
    definition["States"]["WaitBeforeFGBDescribe"]["Seconds"] = 5
    sfn().update_state_machine(stateMachineArn=arn, definition=json.dumps(definition))
    code, out = run("plan", "--env", "dev")
    assert "update    state-machine        ndr-dev-monthly-fg-b-baselines (drift: changed outside ndr)" in out
    assert "~ state `WaitBeforeFGBDescribe`: Seconds" in out
    assert deploy()[0] == 0
    assert "plan: 0 to create, 0 to update" in run("plan", "--env", "dev")[1]


def test_a_failure_half_way_reports_what_was_applied_and_a_rerun_converges(aws: str, workdir: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    from ndr_compiler.deploy import engine

    original = engine.Deployer._machines

    def broken_machines(self):
        resources = original(self)
        victim = resources[2]

        def fail():
            raise RuntimeError("injected failure")

        victim.create = fail
        return resources

    monkeypatch.setattr(engine.Deployer, "_machines", broken_machines)
    code, out = deploy()
    assert code == 1
    assert "injected failure" in out and "change(s) applied before it" in out
    assert "applied  dynamodb-table ndr-project-routing" in out  # the lock table came first, for the deploy lock
    monkeypatch.setattr(engine.Deployer, "_machines", original)
    code, out = deploy()
    assert code == 0, out
    assert "deployed to dev:" in out and ": 0 changed" not in out
    assert "plan: 0 to create, 0 to update" in deploy()[1]


def test_unknown_environment(aws: str, workdir: Path):
    code, out = run("plan", "--env", "prod")
    assert code == 2 and "known: dev" in out


def test_plan_summarises_what_a_create_makes_and_deploy_shows_progress(aws: str, workdir: Path):
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    asl = json.loads((GENERATED / "state_machines" / "sfn_ndr_monthly_fg_b_baselines.asl.json").read_text())
    first = next(iter(asl["States"]))
    assert re.search(r"create +state-machine +ndr-dev-monthly-fg-b-baselines\n"
                     rf"    \+ new state machine sfn_ndr_monthly_fg_b_baselines: \d+ states \({first}"
                     r", .*\), triggers: schedule cron\(0 2 1 \* \? \*\) \(dev\)\n", out), out
    assert re.search(r"create +events-rule +ndr-dev-monthly-baselines\n"
                     r"    \+ schedule cron\(0 2 1 \* \? \*\) -> ndr-dev-monthly-fg-b-baselines:live\n", out), out
    assert re.search(r"create +sagemaker-pipeline +ndr-dev-if-training\n    \+ new pipeline if_training: \d+ steps",
                     out)
    planned = int(re.search(r"plan: (\d+) to create, 0 to update", out)[1])
    code, out = deploy()
    assert code == 0, out
    # the lock table is made before the deploy's own plan (the deploy lock lives in it): one create fewer
    assert re.search(r"^unchanged dynamodb-table +ndr-idempotency-locks$", out, re.M), out
    todo = int(re.search(r"plan: (\d+) to create, 0 to update", out)[1])
    assert todo == planned - 1
    # not a terminal: one progress line per change, in the order applied
    steps = re.findall(rf"^\[(\d+)/{todo} \d+s\] deploy to dev: create (\S+) (\S+)$", out, re.M)
    assert [int(s[0]) for s in steps] == list(range(1, todo + 1))
    assert steps[0][1] == "dynamodb-table" and steps[-1][1] == "cloudwatch-alarm"
    assert not boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName="ndr-idempotency-locks", Key={"lock_key": {"S": "deploy#ndr-dev"}}).get("Item")  # released


def test_a_changed_and_a_removed_schedule_show_in_the_plan(aws: str, workdir: Path):
    assert deploy()[0] == 0
    env = workdir / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    del doc["spec"]["triggers"]["schedules"]["training"]
    doc["spec"]["triggers"]["schedules"]["monthly-baselines"]["schedule"] = "cron(0 3 1 * ? *)"
    env.write_text(yaml.safe_dump(doc))
    events = boto3.client("events", region_name="us-east-1")  # another environment's, its prefix extending ours
    events.put_rule(Name="ndr-dev-eu-training", ScheduleExpression="rate(1 day)")
    events.put_targets(Rule="ndr-dev-eu-training", Targets=[{"Id": "t", "Arn": f"arn:aws:states:us-east-1:{ACCOUNT}:"
                                                                                "stateMachine:ndr-dev-eu-training:live"}])
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    assert "ndr-dev-eu-training" not in out
    assert re.search(r"update +events-rule +ndr-dev-monthly-baselines\n"
                     r'    ~ ScheduleExpression: "cron\(0 2 1 \* \? \*\)" -> "cron\(0 3 1 \* \? \*\)"\n', out), out
    assert re.search(r"orphaned +events-rule +ndr-dev-training\n    - cron\(0 4 2 \* \? \*\): in no spec any more", out)
    assert re.search(r"update +iam-role +ndr-dev-events-invoke\n    ~ Policy\.Statement\[0\]\.Resource\[\d+\]: - ", out)
    assert ", 1 in no spec (left in place)" in out
    code, out = deploy()
    assert code == 0 and "deployed to dev: 2 changed" in out, out
    assert events.describe_rule(Name="ndr-dev-monthly-baselines")["ScheduleExpression"] == "cron(0 3 1 * ? *)"
    assert events.describe_rule(Name="ndr-dev-training")["ScheduleExpression"] == "cron(0 4 2 * ? *)"  # left


@pytest.mark.parametrize(("change", "code", "says"), [
    ({"state_machine": "sfn_ndr_trainin_orchestrator"}, "E514", "did you mean 'sfn_ndr_training_orchestrator'"),
    ({"schedule": "cron(0 4 2 * *)"}, "E123", "a cron has 6 fields"),
])
def test_a_broken_trigger_is_a_diagnostic_before_plan_not_a_crash(aws: str, workdir: Path, change: dict, code: str,
                                                                   says: str):
    env = workdir / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    doc["spec"]["triggers"]["schedules"]["training"].update(change)
    env.write_text(yaml.safe_dump(doc))
    exit_code, out = run("plan", "--env", "dev")
    assert exit_code == 1, out
    assert "Traceback" not in out and "KeyError" not in out
    assert re.search(rf"dev\.yaml:\d+:\d+ {code} .*{re.escape(says)}", out), out


def test_missing_credentials_are_one_line_with_the_fix(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_CONFIG_FILE": str(workdir / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "none"),
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    code, out = run("plan", "--env", "dev")
    assert code == 1 and "Traceback" not in out
    assert "error: plan stopped: no AWS credentials found: set AWS_PROFILE" in out, out


def test_an_unreachable_endpoint_is_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    code, out = run("plan", "--env", "dev")
    assert code == 1 and "Traceback" not in out
    assert re.search(r"error: plan stopped: cannot reach http://127\.0\.0\.1:\d+/: check the network", out), out


def test_credentials_of_another_account_are_refused(aws: str, workdir: Path):
    env = workdir / "specs" / "environments" / "dev.yaml"
    env.write_text(env.read_text().replace('account: "123456789012"', 'account: "210987654321"'))
    code, out = run("plan", "--env", "dev")
    assert code == 1
    assert "the credentials are for account 123456789012, environment dev is account 210987654321" in out, out


def test_a_stale_generated_dir_is_named_file_by_file(aws: str, workdir: Path):
    machine = workdir / "generated" / "state_machines" / "sfn_ndr_training_orchestrator.asl.json"
    machine.write_text(machine.read_text().replace('"Comment"', '"Comment "', 1))
    code, out = run("plan", "--env", "dev")
    assert code == 1
    assert "error: refusing to plan: 1 file(s) of generated/ differ from what the specs compile to:" in out, out
    assert "generated/state_machines/sfn_ndr_training_orchestrator.asl.json" in out


def test_uncommitted_specs_are_refused_or_deployed_tagged_dirty(aws: str, workdir: Path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "specs"]):
        subprocess.run([*git, *args], cwd=workdir, check=True)
    spec = workdir / "specs" / "environments" / "dev.yaml"
    spec.write_text(spec.read_text() + "\n# an uncommitted edit\n")
    code, out = deploy()
    assert code == 1 and "refusing to deploy uncommitted changes (specs/environments/dev.yaml)" in out, out
    code, out = run("specs/", "--deploy", "--env", "dev", "--allow-dirty")
    assert code == 0, out
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
    sm = boto3.client("sagemaker", region_name="us-east-1")
    arn = sm.describe_pipeline(PipelineName="ndr-dev-if-training")["PipelineArn"]
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
    assert tags["ndr:git-commit"] == f"{head}-dirty"


@pytest.mark.parametrize(("code", "message", "is_missing"), [
    ("ValidationException", "Could not find pipeline with PipelineName x.", True),
    ("ValidationException", "1 validation error detected: Value at 'roleArn' failed to satisfy constraint", False),
    ("ResourceNotFoundException", "Requested resource not found", True),
    ("AccessDeniedException", "User is not authorized", False),
])
def test_a_validation_exception_is_missing_only_when_it_says_so(code: str, message: str, is_missing: bool):
    from botocore.exceptions import ClientError

    from ndr_compiler.deploy.errors import missing

    assert missing(ClientError({"Error": {"Code": code, "Message": message}}, "DescribePipeline")) is is_missing


@pytest.mark.parametrize(("code", "says"), [
    ("ThrottlingException", "AWS throttled DescribePipeline after 10 attempts"),
    ("ExpiredTokenException", "the AWS credentials have expired"),
    ("UnrecognizedClientException", "AWS rejected the credentials"),
    ("AccessDeniedException", "access denied to DescribePipeline"),
])
def test_aws_errors_a_user_can_fix_are_explained(code: str, says: str):
    from botocore.exceptions import ClientError

    from ndr_compiler.deploy.errors import explain

    line = explain(ClientError({"Error": {"Code": code, "Message": "m"}}, "DescribePipeline"))
    assert line is not None and says in line and "\n" not in line


def test_a_role_iam_has_not_propagated_yet_is_waited_for(aws: str, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    """Step Functions refuses a brand-new role for a few seconds: the create is retried with backoff, and an error
    that is not about the role fails at once."""
    from botocore.awsrequest import AWSResponse

    from ndr_compiler.deploy import engine, errors

    refusals = {"left": 2}
    waits: list[float] = []

    def not_yet(**_kw: object) -> tuple[AWSResponse, dict] | None:
        if refusals["left"] == 0:
            return None
        refusals["left"] -= 1
        message = ("Neither the global service principal states.amazonaws.com, nor the regional one is authorized "
                   "to assume the provided role.")
        return AWSResponse("https://states", 400, {}, None), {
            "Error": {"Code": "AccessDeniedException", "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}

    original = engine.Deployer.client

    def client(self: engine.Deployer, service: str) -> object:
        made = service not in self.clients
        c = original(self, service)
        if made and service == "stepfunctions":
            c.meta.events.register("before-call.sfn.CreateStateMachine", not_yet)
        return c

    monkeypatch.setattr(engine.Deployer, "client", client)
    monkeypatch.setattr(errors, "SLEEP", waits.append)
    code, out = deploy()
    assert code == 0, out
    assert refusals["left"] == 0 and waits == [2.0, 4.0]
    assert len(sfn().list_state_machines()["stateMachines"]) == 6

    refusals["left"], waits[:] = 1, []
    monkeypatch.setattr(errors, "_ROLE_NOT_READY", re.compile("no message matches this"))  # any other refusal
    machine = workdir / "specs" / "state_machines" / "sfn_ndr_training_orchestrator.yaml"
    assert machine.exists()
    sfn().delete_state_machine(stateMachineArn=sfn().list_state_machines()["stateMachines"][0]["stateMachineArn"])
    code, out = deploy()
    assert code == 1 and waits == [] and "AccessDeniedException" in out, out


def test_a_deploy_is_refused_while_another_holds_the_lock_and_runs_once_its_lease_ends(aws: str, workdir: Path):
    assert deploy()[0] == 0
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    now = int(time.time())
    held = {"lock_key": {"S": "deploy#ndr-dev"}, "record_type": {"S": "deploy_lock"}, "lock_status": {"S": "RUNNING"},
            "owner_execution": {"S": "deploy by ci@runner-7 pid 42 at abc123"},
            "acquired_at": {"N": str(now - 60)}, "expires_at": {"N": str(now + 3540)}}
    ddb.put_item(TableName="ndr-idempotency-locks", Item=held)
    code, out = deploy()
    assert code == 1
    assert "refusing to deploy: deploy by ci@runner-7 pid 42 at abc123 holds the deploy lock of ndr-dev" in out, out
    assert ddb.get_item(TableName="ndr-idempotency-locks", Key={"lock_key": held["lock_key"]})["Item"] == held
    ddb.put_item(TableName="ndr-idempotency-locks", Item={**held, "expires_at": {"N": str(now - 1)}})  # lease over
    code, out = deploy()
    assert code == 0 and "deployed to dev: 0 changed" in out, out
    assert "Item" not in ddb.get_item(TableName="ndr-idempotency-locks", Key={"lock_key": held["lock_key"]})


def test_prune_deletes_what_no_spec_names_rules_first_and_leaves_other_environments_alone(aws: str, workdir: Path):
    assert deploy()[0] == 0
    sfn_client, sm = sfn(), boto3.client("sagemaker", region_name="us-east-1")
    # another environment whose prefix extends ours, and an untagged look-alike: not ours to delete
    sm.create_pipeline(PipelineName="ndr-dev-eu-if-training", PipelineDefinition='{"Version": "2020-12-01"}',
                       RoleArn=f"arn:aws:iam::{ACCOUNT}:role/x",
                       Tags=[{"Key": "ndr:environment", "Value": "ndr-dev-eu"}])
    sm.create_pipeline(PipelineName="ndr-dev-handmade", PipelineDefinition='{"Version": "2020-12-01"}',
                       RoleArn=f"arn:aws:iam::{ACCOUNT}:role/x")
    (workdir / "specs" / "state_machines" / "sfn_ndr_training_orchestrator.yaml").unlink()
    env = workdir / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    del doc["spec"]["triggers"]["schedules"]["training"]
    env.write_text(yaml.safe_dump(doc))
    assert run("specs/")[0] == 0  # generated/ follows the specs
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    orphans = re.findall(r"^orphaned +(\S+) +(\S+)$", out, re.M)
    alarms = [("cloudwatch-alarm", f"ndr-dev-training-orchestrator-{w}") for w in ("failed", "throttled", "timed-out")]
    assert orphans == [("events-rule", "ndr-dev-training"), *alarms,
                       ("state-machine", "ndr-dev-training-orchestrator"),
                       ("iam-role", "ndr-dev-sfn-training-orchestrator")], out
    assert ", 6 in no spec (left in place)" in out
    code, out = deploy()  # without --prune: left in place
    assert code == 0 and "6 in no spec (left in place)" in out, out
    assert "ndr-dev-training-orchestrator" in {m["name"] for m in sfn_client.list_state_machines()["stateMachines"]}
    code, out = run("specs/", "--deploy", "--env", "dev", "--prune")
    assert code == 0, out
    deletes = re.findall(r"deploy to dev: delete (\S+) (\S+)$", out, re.M)
    assert [d[0] for d in deletes] == ["events-rule", *["cloudwatch-alarm"] * 3, "state-machine", "iam-role"], out
    assert "ndr-dev-training-orchestrator" not in {m["name"] for m in sfn_client.list_state_machines()["stateMachines"]}
    assert "ndr-dev-training" not in {r["Name"] for r in boto3.client("events", region_name="us-east-1").list_rules(
        NamePrefix="ndr-dev-")["Rules"]}
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert "ndr-dev-sfn-training-orchestrator" not in roles and "ndr-dev-sfn-15m-features-inference" in roles
    pipelines = {p["PipelineName"] for p in sm.list_pipelines()["PipelineSummaries"]}
    assert {"ndr-dev-eu-if-training", "ndr-dev-handmade", "ndr-dev-if-training"} <= pipelines
    code, out = run("plan", "--env", "dev")
    assert code == 0 and "orphaned" not in out, out
    # alarms turned off: every alarm, the topic and the metric filter are this environment's orphans
    doc = yaml.safe_load(env.read_text())
    doc["spec"]["alarms"] = {"enabled": False}
    env.write_text(yaml.safe_dump(doc))
    code, out = run("specs/", "--deploy", "--env", "dev", "--prune")
    assert code == 0, out
    deleted = re.findall(r"deploy to dev: delete (\S+) (\S+)$", out, re.M)
    assert ("sns-topic", "ndr-dev-alarms") in deleted and ("logs-metric-filter", "ndr-dev-quarantine-ratio") in deleted
    assert boto3.client("cloudwatch", region_name="us-east-1").describe_alarms(
        AlarmNamePrefix="ndr-dev-")["MetricAlarms"] == []
    assert boto3.client("sns", region_name="us-east-1").list_topics()["Topics"] == []
    code, out = run("plan", "--env", "dev")
    assert code == 0 and "orphaned" not in out, out


def test_the_pipelines_role_reads_raw_pulls_only_its_images_and_has_what_the_jobs_declare(aws: str, workdir: Path):
    assert deploy()[0] == 0
    doc = boto3.client("iam").get_role_policy(RoleName="ndr-dev-sagemaker-pipelines", PolicyName="ndr-generated")
    statements = {s["Sid"]: s for s in doc["PolicyDocument"]["Statement"]}
    raw = "arn:aws:s3:::acme-ndr-raw/*"
    writes = [s["Sid"] for s in statements.values() if {"s3:PutObject", "s3:DeleteObject"} & set(s["Action"])]
    assert all(raw not in statements[sid]["Resource"] for sid in writes)  # raw is never written
    assert raw in statements["ReadRaw"]["Resource"]
    assert statements["PullImages"]["Resource"] == [
        f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/ndr-processing",
        f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/ndr-spark-processing",
    ]
    # declared by the jobs (ndr_jobs.interface.entrypoints): inventory and join on Redshift, training's registry
    assert "redshift-data:ExecuteStatement" in statements["RedshiftData"]["Action"]
    assert statements["RedshiftSecret"]["Resource"] == [f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:ndr*"]
    assert "sagemaker:CreateModelPackage" in statements["ModelRegistry"]["Action"]


@pytest.mark.parametrize(("uri", "arn"), [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/ndr-spark:1.2",
     "arn:aws:ecr:eu-west-1:123456789012:repository/ndr-spark"),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/ndr@sha256:" + "a" * 64,
     "arn:aws:ecr:us-east-1:123456789012:repository/team/ndr"),
    ("${NdrProcessingImageUri}", "${EcrRepositoryArn_NdrProcessingImageUri}"),
    ("docker.io/library/python:3.12", None),
])
def test_ecr_repository_of_an_image(uri: str, arn: str | None):
    from ndr_compiler.render.iam import ecr_repository_arn

    assert ecr_repository_arn(uri) == arn


def test_alarms_watch_every_machine_and_pipeline_freshness_and_the_quarantine_ratio(aws: str, workdir: Path):
    assert deploy()[0] == 0
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    alarms = {a["AlarmName"]: a for page in cw.get_paginator("describe_alarms").paginate()
              for a in page["MetricAlarms"]}
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:ndr-dev-alarms"
    assert all(a["AlarmActions"] == [topic] for a in alarms.values())
    machines = [m["name"] for m in sfn().list_state_machines()["stateMachines"]]
    for name in machines:
        for what in ("failed", "timed-out", "throttled"):
            assert f"{name}-{what}" in alarms
    pipelines = [p["PipelineName"] for p in boto3.client("sagemaker", region_name="us-east-1").list_pipelines()[
        "PipelineSummaries"]]
    assert all(alarms[f"{p}-failed"]["Namespace"] == "AWS/Sagemaker/ModelBuildingPipeline" for p in pipelines)
    stale = alarms["ndr-dev-15m-features-inference-stale"]
    assert (stale["MetricName"], stale["ComparisonOperator"], stale["TreatMissingData"]) == (
        "ExecutionsSucceeded", "LessThanThreshold", "breaching")
    assert stale["Period"] * stale["EvaluationPeriods"] == 45 * 60
    ratio = alarms["ndr-dev-quarantine-ratio"]
    assert (ratio["Namespace"], ratio["Threshold"]) == ("NDR/ndr-dev", 0.5)
    (metric_filter,) = boto3.client("logs", region_name="us-east-1").describe_metric_filters(
        logGroupName="/aws/sagemaker/ProcessingJobs")["metricFilters"]
    assert metric_filter["metricTransformations"][0]["metricValue"] == "$.quarantine_ratio"

    env = workdir / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    doc["spec"]["alarms"]["max_quarantine_ratio"] = 0.2
    doc["spec"]["alarms"]["email"] = ["oncall@example.com"]
    env.write_text(yaml.safe_dump(doc))
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    assert re.search(r"update +cloudwatch-alarm +ndr-dev-quarantine-ratio\n    ~ Threshold: 0\.5 -> 0\.2", out), out
    assert re.search(r"update +sns-topic +ndr-dev-alarms\n", out), out
    code, out = deploy()
    assert code == 0 and "deployed to dev: 2 changed" in out, out
    subs = boto3.client("sns", region_name="us-east-1").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [s["Endpoint"] for s in subs] == ["oncall@example.com"]


def _pipeline_images(name: str) -> set[str]:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    definition = json.loads(sm.describe_pipeline(PipelineName=name)["PipelineDefinition"])
    return {s["Arguments"]["AppSpecification"]["ImageUri"] for s in definition["Steps"]}


def test_deploy_resolves_image_tags_to_digests_in_the_pipelines_it_puts(bare_aws: str, workdir: Path, tree: Path):
    env = workdir / "specs" / "environments" / "dev.yaml"
    doc = yaml.safe_load(env.read_text())
    python_uri = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ndr-processing:1.2.3"  # an explicit tag still works
    doc["spec"]["values"]["NdrProcessingImageUri"] = python_uri
    env.write_text(yaml.safe_dump(doc))
    digests = put_images(doc["spec"]["values"], KINDS, tree)
    spark_repo = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ndr-spark-processing"
    spark = f"{spark_repo}@{digests['NdrSparkProcessingImageUri']}"
    python = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ndr-processing@{digests['NdrProcessingImageUri']}"
    assert digests["NdrSparkProcessingImageUri"] != digests["NdrProcessingImageUri"]
    from ndr_compiler import images

    spark_tag = images.tags(tree)["spark"]
    code, out = run("plan", "--env", "dev")
    assert code == 0, out
    assert f"{spark_repo}:ctx ({spark_tag}) -> {spark}" in out, out
    assert f"{python_uri} -> {python}" in out, out
    code, out = run("specs/", "--deploy", "--env", "dev", "--allow-dirty")
    assert code == 0, out
    assert _pipeline_images("ndr-dev-features-15m") == {spark}
    assert _pipeline_images("ndr-dev-if-training") == {spark, python}
    # the same images deploy as 0 changed
    assert "deployed to dev: 0 changed" in run("specs/", "--deploy", "--env", "dev", "--allow-dirty")[1]


def test_an_image_missing_in_ecr_refuses_the_deploy_in_one_line(bare_aws: str, workdir: Path, tree: Path):
    from ndr_compiler import images

    tags = images.tags(tree)
    code, out = deploy()
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    spark = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ndr-spark-processing:{tags['spark']}"
    assert len(errors) == 1 and spark in errors[0] and "`ndr-compile images push --env dev`" in errors[0], out
    assert errors[0].startswith("error: refusing to deploy: image(s) not in ECR:"), out
    assert sfn().list_state_machines()["stateMachines"] == []  # nothing applied, not even the lock table
    assert boto3.client("dynamodb", region_name="us-east-1").list_tables()["TableNames"] == []
    code, out = run("plan", "--env", "dev")  # the plan shows what is missing and goes on
    assert code == 0 and "MISSING in ECR" in out and "note: the deploy would be refused" in out, out
    # pushed, it deploys; then a change to a shipped file is another image, missing until pushed again
    put_images(dev_values(), KINDS, tree)
    assert deploy()[0] == 0
    launcher = tree / "ndr_jobs" / "runtime" / "spark_launcher.py"
    launcher.write_text(launcher.read_text() + "\n# changed\n")
    code, out = deploy()
    assert code == 1 and images.tags(tree)["spark"] in out and tags["python"] not in out, out


FAKE_DOCKER = """#!{python}
import hashlib, json, os, sys
data = sys.stdin.buffer.read() if sys.argv[1] in ("build", "login") else b""
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"args": sys.argv[1:], "stdin_sha256": hashlib.sha256(data).hexdigest(),
                          "stdin": data.decode() if sys.argv[1] == "login" else ""}}) + "\\n")
"""


@pytest.fixture
def docker_log(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``docker`` on PATH that records its calls to the returned file (FAKE_DOCKER)."""
    bin_dir, log = workdir / "bin", workdir / "docker.log"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def test_images_push_builds_logs_in_creates_the_repositories_and_pushes_ctx_tags(
        bare_aws: str, workdir: Path, tree: Path, docker_log: Path):
    """`docker` is a stand-in that records its calls (no Docker daemon here): what reaches it is what Docker would
    be asked to do, the build context on stdin included."""
    import hashlib

    from ndr_compiler import images

    log = docker_log
    code, out = run("images", "push", "--env", "specs/environments/dev.yaml")
    assert code == 0, out
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    tags = images.tags(tree)
    registry = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
    builds = [c for c in calls if c["args"][0] == "build"]
    assert [c["args"][:3] for c in builds] == [["build", "--tag", f"ndr-python:{tags['python']}"],
                                               ["build", "--tag", f"ndr-spark:{tags['spark']}"]]
    for c, kind in zip(builds, ("python", "spark"), strict=True):  # the context on stdin is the one tagged
        assert c["stdin_sha256"] == hashlib.sha256(images.context(images.IMAGES[kind], tree)).hexdigest()
        assert c["args"][-1] == "-"
    assert f"BASE_IMAGE={images.spark_base('us-east-1')}" in builds[1]["args"]
    logins = [c for c in calls if c["args"][0] == "login"]
    assert [c["args"][:4] for c in logins] == [["login", "--username", "AWS", "--password-stdin"]] * 2
    assert all(c["stdin"] and c["stdin"] not in json.dumps([c["args"] for c in calls]) for c in logins)
    # ours once, then SageMaker's registry right before the Spark build (its base is pulled from there)
    base = images.parse_ecr_uri(images.spark_base("us-east-1"))
    assert logins[0]["args"][4].endswith(registry) and logins[1]["args"][4].endswith(base.registry)
    assert calls.index(logins[1]) == calls.index(builds[1]) - 1
    pushes = [c["args"][1] for c in calls if c["args"][0] == "push"]
    assert pushes == [f"{registry}/ndr-processing:{tags['python']}", f"{registry}/ndr-spark-processing:{tags['spark']}"]
    ecr = boto3.client("ecr", region_name="us-east-1")
    repos = {r["repositoryName"]: r["repositoryArn"] for r in ecr.describe_repositories()["repositories"]}
    assert set(repos) == {"ndr-processing", "ndr-spark-processing"}
    assert ecr.list_tags_for_resource(resourceArn=repos["ndr-processing"])["tags"] == [
        {"Key": "ndr:environment", "Value": "ndr-dev"}]
    assert "created  ECR repository ndr-spark-processing" in out and f"pushed   {pushes[1]}" in out
    # the repositories exist now: a second push creates none
    code, out = run("images", "push", "--env", "dev")
    assert code == 0 and "created" not in out, out


def test_images_build_logs_in_to_the_spark_base_unless_told_not_to(
        bare_aws: str, workdir: Path, tree: Path, docker_log: Path, monkeypatch: pytest.MonkeyPatch):
    log = docker_log

    def calls(*args: str) -> list[str]:
        log.unlink(missing_ok=True)
        code, out = run("images", "build", *args)
        assert code == 0, out
        return [json.loads(line)["args"][0] for line in log.read_text().splitlines()]

    assert calls("--only", "spark") == ["login", "build"]
    assert calls("--no-login") == ["build", "build"]
    assert calls("--only", "python") == ["build"], "the Python image's base is public"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out = run("images", "build", "--only", "spark")
    assert code == 1 and out.count("\n") == 1 and out.startswith("error: ") and "credentials" in out.lower(), out
