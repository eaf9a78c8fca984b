"""The inbound contracts: the project's copies, their JSON Schemas, and the one set of rules behind both the
state machines' intake (JSONata) and the jobs' parsers (Python).

* every example of ``specs/contracts/events`` is what the upstream systems send (``../shared/contracts`` when a
  checkout has it beside), validates against its machine's generated schema, and is accepted by its machine;
* the JSONata type checks and ``ndr_jobs.interface.contract`` agree on every value hypothesis tries;
* any JSON, in any wrapper, sent to any machine ends in success, a clean ignore or ``NDR.InvalidEvent``, and
  what a machine accepts, its schema accepts, and every pipeline it starts gets values its jobs accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.intake import HELPERS
from ndr_jobs.interface import contract
from ndr_local import ScriptedPipelines, offline_aws
from ndr_local.platform import OfflinePlatform, stand_up
from ndr_local.sfn_runtime import _compiled, _from_jsonata, _to_jsonata
from tests.conftest import CONTRACTS, GENERATED, SHARED
from tests.test_faults import MACHINES, PIPELINES, PROJECT, accepted_by_every_step, new_case

EXAMPLES = {
    "15m_batch_completed.eventbridge.json": "sfn_ndr_15m_features_inference",
    "15m_batch_completed.sqs.json": "sfn_ndr_15m_features_inference",
    "15m_batch_completed.sns.json": "sfn_ndr_15m_features_inference",
    "monthly_baselines.scheduler.json": "sfn_ndr_monthly_fg_b_baselines",
    "training.request.json": "sfn_ndr_training_orchestrator",
    "backfill.request.json": "sfn_ndr_backfill_reprocessing",
}


def unwrap(payload: Any) -> Any:
    """What NormalizeIncomingMessage hands the intake: SQS records, SNS notifications and JSON text taken off."""
    if isinstance(payload, str):
        try:
            return unwrap(json.loads(payload))
        except ValueError:
            return payload
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "body" in payload[0]:
        return unwrap(json.loads(payload[0]["body"]))
    if isinstance(payload, dict) and payload.get("Type") == "Notification":
        return unwrap(json.loads(payload["Message"]))
    return payload


def schema(machine: str) -> dict[str, Any]:
    return json.loads((GENERATED / "schema" / "events" / f"{machine}.schema.json").read_text())


def test_the_projects_copies_are_the_upstream_contracts():
    names = sorted(p.name for p in CONTRACTS.glob("*.json"))
    assert names == sorted([*EXAMPLES, "15m_heartbeat.eventbridge.json"])
    upstream = SHARED / "contracts" / "events"
    if upstream.is_dir():  # beside a checkout that has them: byte for byte
        assert {p.name: p.read_bytes() for p in upstream.glob("*.json")} == {
            p.name: p.read_bytes() for p in CONTRACTS.glob("*.json")}


@pytest.mark.parametrize(("example", "machine"), sorted(EXAMPLES.items()))
def test_every_example_validates_against_its_machines_schema(example: str, machine: str):
    event = unwrap(json.loads((CONTRACTS / example).read_text()))
    jsonschema.Draft202012Validator(schema(machine)).validate(event)


def test_the_heartbeat_is_not_a_batch_completed_event():
    event = json.loads((CONTRACTS / "15m_heartbeat.eventbridge.json").read_text())
    assert not jsonschema.Draft202012Validator(schema("sfn_ndr_15m_features_inference")).is_valid(event)


# -- one set of rules ---------------------------------------------------------------------------------


def jsonata_check(kind: str, value: Any) -> Any:
    text = js.block([*HELPERS, ("v", "$input")], f"$t_{kind}($v)")
    return _from_jsonata(_compiled(" ".join(text.split())).evaluate(None, {"input": _to_jsonata(value)}))


def python_check(kind: str, value: Any) -> Any:
    check = {"id": contract.identifier, "run_key": contract.run_key, "timestamp": contract.timestamp,
             "window_start": contract.window_start, "month": contract.month, "s3_uri": contract.s3_uri}[kind]
    try:
        return check(value)
    except contract.ContractError:
        return None


_DIGITS = st.text("0123456789", min_size=1, max_size=4)
_STAMPS = st.builds(lambda y, mo, d, h, mi, s, tail: f"{y}-{mo}-{d}T{h}:{mi}:{s}{tail}",
                    _DIGITS, _DIGITS, _DIGITS, _DIGITS, _DIGITS, _DIGITS,
                    st.sampled_from(["Z", "+00:00", ".000Z", ".5Z", "-00:00", "", "z", "+01:00"]))
_VALUES = st.one_of(
    _STAMPS,
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.text(max_size=30),
    st.text(alphabet="abcAZ09._-/:$ ;`'\"\\\n", max_size=40),
    st.sampled_from(["s3://acme-ndr-raw/pan-traffic/acme/x/", "s3://a/b", "s3://ab-c/../x", "2026-02-29",
                     "2024-02-29T00:00:00Z", "2026-02-29T00:00:00Z", "2026-13", "1969-12-31T23:45:00Z"]),
    st.integers(), st.none(), st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["id", "run_key", "timestamp", "window_start", "month", "s3_uri"]), value=_VALUES)
def test_the_intakes_jsonata_and_the_jobs_python_agree(kind: str, value: Any):
    assert jsonata_check(kind, value) == python_check(kind, value)


@settings(max_examples=200, deadline=None)
@given(folder=st.one_of(
    st.builds(lambda d, hh, mm: f"s3://acme-ndr-raw/pan-traffic/acme/ndr-prod/v1/{d}/{hh}{mm}/",
              st.sampled_from(["2026/10/01", "2026/02/29", "2024/02/29", "2026/13/01", "2026/10/32"]),
              st.sampled_from(["00", "12", "23", "24", "7"]), st.sampled_from(["00", "15", "30", "45", "07", "60"])),
    _VALUES))
def test_batch_folders_parse_the_same_in_both(folder: Any):
    got = jsonata_check("batch_folder", folder)
    try:
        parts = contract.batch_folder(folder)
    except contract.ContractError:
        assert got is None
        return
    assert got == {"batch_folder": folder, **parts.__dict__}


@given(st.lists(st.text(max_size=8), min_size=1, max_size=4), st.lists(st.text(max_size=8), min_size=1, max_size=4))
def test_lock_keys_are_unambiguous(a: list[str], b: list[str]):
    assert (contract.lock_key("s", *a) == contract.lock_key("s", *b)) == (a == b)


# -- any event, any machine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[tuple[OfflinePlatform, ScriptedPipelines]]:
    pipelines = ScriptedPipelines()
    with offline_aws(pipelines):
        yield stand_up(GENERATED, PROJECT, PIPELINES), pipelines


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _mutations(machine: str) -> st.SearchStrategy[Any]:
    """The machine's valid example with one field replaced (or removed): the likeliest way to be almost right."""
    example = new_case(machine).event
    target = example.get("detail", example)
    keys = sorted(target)

    def mutate(key: str, value: Any, drop: bool) -> Any:
        event = json.loads(json.dumps(example))
        body = event.get("detail", event)
        if drop:
            body.pop(key, None)
        else:
            body[key] = value
        return event

    return st.builds(mutate, st.sampled_from(keys), st.one_of(_JSON, _VALUES), st.booleans())


def _wrapped(event: Any, how: str) -> Any:
    body = json.dumps(event)
    if how == "sqs":
        return [{"messageId": "m", "body": body, "eventSource": "aws:sqs"}]
    if how == "sns":
        return {"Type": "Notification", "Message": body}
    if how == "string":
        return body
    return event


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(data=st.data())
def test_any_event_in_any_wrapper_ends_accepted_ignored_or_rejected_by_name(
        fuzz_world: tuple[OfflinePlatform, ScriptedPipelines], data: st.DataObject):
    platform, pipelines = fuzz_world
    machine = data.draw(st.sampled_from(MACHINES))
    event = data.draw(st.one_of(_mutations(machine), _JSON))
    how = data.draw(st.sampled_from(["plain", "sqs", "sns", "string"]))
    pipelines.starts.clear()
    result = platform.run(machine, json.dumps(_wrapped(event, how)))  # the input document, whatever it holds
    platform.events()
    if result.status == "FAILED":
        assert (result.error or "").startswith("NDR."), (result.error, result.cause)
    else:
        assert result.status == "SUCCEEDED", result.status
    past_intake = {"LoadProjectRoutingFromDynamo", "LoadProjectParametersFromDynamo"} & set(result.path)
    if past_intake:  # the intake took it (a later check may still reject it): so does the schema
        assert jsonschema.Draft202012Validator(schema(machine)).is_valid(unwrap(_wrapped(event, how)))
    for name, parameters in pipelines.starts:
        accepted_by_every_step(name, parameters)
