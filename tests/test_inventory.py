"""machine_inventory_unload: the DuckDB path for real (local and S3 storage), the Redshift path on moto, and the
synthetic inventory.

moto 5.2.5's ``redshift-data`` records ``ExecuteStatement`` calls but never runs them: a statement stays
``STARTED`` and has no ``Error`` field. The Redshift tests therefore play Redshift themselves at the job's
first poll (the injected ``sleep``): they parse the UNLOAD the job sent, run its SELECT in DuckDB against
the synthetic inventory and put the Parquet file where the UNLOAD points, then set the moto statement's
status. So what is checked is the SQL and arguments sent, the polling, the error surfacing, the timeout's
cancel and the S3 staging swap; Redshift's own UNLOAD semantics are not.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ndr_jobs.datasets import storage
from ndr_jobs.datasets.redshift import RedshiftConfigError, RedshiftStatementError, RedshiftTimeoutError
from ndr_jobs.devtools.synth.generator import FW_PUBLIC_IP, build_network
from ndr_jobs.devtools.synth.inventory import create_inventory_duckdb, inventory_machines
from ndr_jobs.processing.machine_inventory_unload_job import (
    INVENTORY_COLUMNS,
    inventory_select,
    run_machine_inventory_unload_from_runtime_config,
    unload_inventory,
)
from ndr_jobs.runtime.config import MonthlyRuntime
from tests.conftest import committed

HOSTS, SEED = 40, 7
MONTH = "2026-09"
PARTITION = "inventory/feature_spec_version=v1/reference_month=2026-09"
RUNTIME = MonthlyRuntime(project_name="ndr-prod", feature_spec_version="v1", reference_month=MONTH)
UNLOAD = re.compile(
    r"^UNLOAD \('((?:[^']|'')*)'\) TO '((?:[^']|'')*)' IAM_ROLE ('[^']*'|default) FORMAT PARQUET PARALLEL OFF "
    r"ALLOWOVERWRITE$",
    re.S,
)
ENV_VARS = ("NDR_INVENTORY_DUCKDB", "NDR_INVENTORY_TABLE", "NDR_INVENTORY_QUERY", "NDR_REDSHIFT_WORKGROUP",
            "NDR_REDSHIFT_CLUSTER_ID", "NDR_REDSHIFT_DATABASE", "NDR_REDSHIFT_SECRET_ARN", "NDR_REDSHIFT_DB_USER",
            "NDR_REDSHIFT_IAM_ROLE", "NDR_REDSHIFT_TIMEOUT_SECONDS", "NDR_REDSHIFT_POLL_SECONDS",
            "NDR_LOCAL_S3_ROOT")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def inventory_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic inventory, plus machines that test the month filter (10.99.1.x)."""
    path = tmp_path_factory.mktemp("inv") / "inventory.duckdb"
    create_inventory_duckdb(path, HOSTS, SEED, decommissioned=3)
    con = duckdb.connect(str(path))
    rows = [  # ip, valid_from, valid_to: active in September 2026 iff from < Oct 1 and (to is null or to > Sep 1)
        ("10.99.1.1", date(2026, 9, 30), None),  # arrives on the month's last day: active
        ("10.99.1.2", date(2026, 10, 1), None),  # arrives the day after: not active
        ("10.99.1.3", date(2020, 1, 1), date(2026, 9, 2)),  # leaves during the month: active
        ("10.99.1.4", date(2020, 1, 1), date(2026, 9, 1)),  # left when the month began: not active
    ]
    con.executemany(
        "INSERT INTO machine_inventory VALUES (?, ?, '10.99.1.0/24', 'trust', 'Windows 11', 'workstation', 'low', "
        "?, ?)",
        [(ip, f"edge{i}", f, t) for i, (ip, f, t) in enumerate(rows)],
    )
    con.close()
    return path


def expected_ips() -> list[str]:
    active = [m.ip_address for m in inventory_machines(HOSTS, SEED)] + ["10.99.1.1", "10.99.1.3"]
    return sorted(active)  # string order, as ORDER BY ip_address in both engines


def read_partition(path: str) -> pa.Table:
    files = storage.committed_files(path) or []
    assert [Path(f).name for f in files] == ["part-00000.parquet"]
    return pq.read_table(io.BytesIO(storage.read_bytes(files[0])))


def everything(prefix: str) -> list[str]:
    """Every object under ``prefix``, hidden ones too, relative to it."""
    return [o.path[len(prefix) + 1 :] for o in storage.list_objects(prefix, include_hidden=True)]


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inventory_db: Path) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(store))
    monkeypatch.setenv("NDR_INVENTORY_DUCKDB", str(inventory_db))
    return store


# -- the synthetic inventory --------------------------------------------------------------------------


def test_synthetic_inventory_lists_every_internal_machine_of_the_network():
    net = build_network(HOSTS, SEED)
    machines = inventory_machines(HOSTS, SEED)
    ips = {m.ip_address for m in machines}
    assert {net.ips[i] for i in net.host_ids.tolist()} <= ips
    assert {"10.20.0.10", "10.20.0.11", "10.20.0.12", "10.20.0.20", "10.20.0.25", "10.20.0.30", "10.20.0.40"} <= ips
    assert FW_PUBLIC_IP not in ips and len(ips) == len(machines) == HOSTS + 7
    assert all(m.segment == m.ip_address.rsplit(".", 1)[0] + ".0/24" for m in machines)
    assert {m.zone for m in machines} == {"trust", "dev", "servers"}
    assert machines == inventory_machines(HOSTS, SEED)


def test_synthetic_inventory_options():
    full = inventory_machines(HOSTS, SEED)
    partial = inventory_machines(HOSTS, SEED, missing_fraction=0.5, decommissioned=2)
    gone = {m.ip_address for m in full} - {m.ip_address for m in partial}
    assert gone and all(m.role in ("workstation", "developer") for m in full if m.ip_address in gone)
    old = [m for m in partial if m.ip_address.startswith("10.99.0.")]
    assert len(old) == 2 and all(m.valid_to is not None for m in old)
    with pytest.raises(ValueError, match="missing_fraction"):
        inventory_machines(HOSTS, SEED, missing_fraction=1.0)


def test_synthetic_inventory_file_is_deterministic(tmp_path: Path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    assert create_inventory_duckdb(a, HOSTS, SEED) == create_inventory_duckdb(b, HOSTS, SEED) == HOSTS + 7
    rows = [duckdb.connect(str(p), read_only=True).sql("SELECT * FROM machine_inventory").fetchall() for p in (a, b)]
    assert rows[0] == rows[1] and len(rows[0]) == HOSTS + 7


# -- DuckDB (local) -------------------------------------------------------------------------------------


def test_duckdb_unload_writes_the_active_machines_of_the_month(local: Path):
    summary = run_machine_inventory_unload_from_runtime_config(RUNTIME)
    table = read_partition(str(local / PARTITION))
    assert table.column_names == list(INVENTORY_COLUMNS)
    assert all(pa.types.is_string(f.type) for f in table.schema)
    assert table.column("ip_address").to_pylist() == expected_ips()
    row = next(r for r in table.to_pylist() if r["ip_address"] == "10.20.0.10")
    assert row == {"ip_address": "10.20.0.10", "hostname": "dc01", "segment": "10.20.0.0/24", "zone": "servers",
                   "os": "Windows Server 2022", "role": "domain_controller", "criticality": "critical"}  # fmt: skip
    assert summary["rows"] == len(expected_ips()) and summary["engine"] == "duckdb"
    assert summary["output"] == str(local / PARTITION) and summary["output_files"] == 1
    assert sorted(p.name for p in (local / "inventory").iterdir()) == ["feature_spec_version=v1"]  # no staging left
    assert sorted(p.name for p in (local / PARTITION).iterdir()) == ["_manifest.json", "_runs"]


def test_duckdb_rerun_replaces_the_partition_identically(local: Path, inventory_db: Path, tmp_path: Path):
    run_machine_inventory_unload_from_runtime_config(RUNTIME)
    first = committed(local / PARTITION)
    (local / PARTITION / "stale.parquet").write_bytes(first["part-00000.parquet"])  # not named by the manifest
    run_machine_inventory_unload_from_runtime_config(RUNTIME)
    assert committed(local / PARTITION) == first  # the same bytes, and the stray file is never read
    assert read_partition(str(local / PARTITION)).num_rows == len(expected_ips())


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("SELECT * FROM machine_inventory UNION ALL SELECT * FROM machine_inventory WHERE hostname = 'dc01'",
         "1 ip_address values appear more than once in the inventory: 10.20.0.10"),
        ("SELECT * FROM machine_inventory WHERE valid_from > {month_end}", "returned no rows"),
        ("SELECT * FROM no_such_table", "inventory query failed in DuckDB .*no_such_table"),
        ("SELECT ip_address, hostname FROM machine_inventory", "inventory query failed in DuckDB"),
    ],
)  # fmt: skip
def test_a_bad_source_fails_and_keeps_the_previous_partition(
    local: Path, monkeypatch: pytest.MonkeyPatch, query: str, error: str
):
    run_machine_inventory_unload_from_runtime_config(RUNTIME)
    before = committed(local / PARTITION), everything(str(local / PARTITION))
    monkeypatch.setenv("NDR_INVENTORY_QUERY", query)
    with pytest.raises(ValueError, match=error):
        run_machine_inventory_unload_from_runtime_config(RUNTIME)
    assert (committed(local / PARTITION), everything(str(local / PARTITION))) == before  # the failed run's files gone
    assert sorted(p.name for p in (local / "inventory").iterdir()) == ["feature_spec_version=v1"]


def test_custom_query_placeholders(local: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(
        "NDR_INVENTORY_QUERY",
        "SELECT * FROM machine_inventory WHERE valid_from >= {month_start} AND valid_from < {month_end} "
        "AND strftime(valid_from, '%Y-%m') = {reference_month};",
    )
    run_machine_inventory_unload_from_runtime_config(RUNTIME)
    assert read_partition(str(local / PARTITION)).column("ip_address").to_pylist() == ["10.99.1.1"]


def test_table_name_comes_from_the_environment(local: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NDR_INVENTORY_TABLE", "main.machine_inventory")
    assert "FROM main.machine_inventory WHERE" in inventory_select(MONTH)
    run_machine_inventory_unload_from_runtime_config(RUNTIME)
    monkeypatch.setenv("NDR_INVENTORY_TABLE", "inventory; DROP TABLE x")
    with pytest.raises(ValueError, match="not a plain"):
        run_machine_inventory_unload_from_runtime_config(RUNTIME)


def test_missing_duckdb_file_and_bad_month(local: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(ValueError, match="not YYYY-MM"):
        run_machine_inventory_unload_from_runtime_config(MonthlyRuntime("ndr-prod", "v1", "2026-13"))
    monkeypatch.setenv("NDR_INVENTORY_DUCKDB", str(tmp_path / "nope.duckdb"))
    with pytest.raises(FileNotFoundError, match="nope.duckdb"):
        run_machine_inventory_unload_from_runtime_config(RUNTIME)


def test_december_rolls_over_to_january():
    select = inventory_select("2026-12")
    assert "valid_from < CAST('2027-01-01' AS DATE)" in select and "valid_to > CAST('2026-12-01' AS DATE)" in select


def test_the_script_runs_the_job(local: Path, inventory_db: Path):
    import os

    env = {**os.environ, "NDR_STORAGE_ROOT": str(local), "NDR_INVENTORY_DUCKDB": str(inventory_db)}
    proc = subprocess.run(
        [sys.executable, "-m", "ndr_jobs.scripts.run_machine_inventory_unload", "--project-name", "ndr-prod",
         "--feature-spec-version", "v1", "--reference-month", MONTH],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rows"] == len(expected_ips())


# -- AWS (moto) -----------------------------------------------------------------------------------------

BUCKET = "acme-ndr-features"
ROLE = "arn:aws:iam::123456789012:role/ndr-redshift-unload"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ndr-redshift-AbCdEf"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto S3 + redshift-data, the storage root on S3, Redshift configured (cluster + secret)."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("NDR_STORAGE_ROOT", f"s3://{BUCKET}/ndr-prod")
    monkeypatch.setenv("NDR_REDSHIFT_CLUSTER_ID", "ndr-cluster")
    monkeypatch.setenv("NDR_REDSHIFT_DATABASE", "ndr")
    monkeypatch.setenv("NDR_REDSHIFT_SECRET_ARN", SECRET)
    monkeypatch.setenv("NDR_REDSHIFT_IAM_ROLE", ROLE)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield boto3.client("redshift-data")


def moto_statements() -> dict[str, Any]:
    from moto.redshiftdata.models import redshiftdata_backends

    return redshiftdata_backends["123456789012"]["us-east-1"].statements


def fake_redshift(inventory_db: Path, status: str = "FINISHED", write: bool = True) -> Callable[[float], None]:
    """A ``sleep`` that, at the first poll, runs the sent UNLOAD's SELECT in DuckDB and ends the statement."""
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) > 1:
            return
        (statement,) = moto_statements().values()
        match = UNLOAD.match(statement.query_string)
        assert match, statement.query_string
        select, prefix = (g.replace("''", "'") for g in match.groups()[:2])
        if write:
            con = duckdb.connect(str(inventory_db), read_only=True)
            table = con.sql(select).to_arrow_table()
            con.close()
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            storage.write_bytes(prefix + "000.parquet", buffer.getvalue())
        statement.status = status

    sleep.polls = polls  # type: ignore[attr-defined]
    return sleep


def test_redshift_unload_sends_the_unload_polls_and_swaps_in(aws: Any, inventory_db: Path):
    sleep = fake_redshift(inventory_db)
    summary = unload_inventory(RUNTIME, redshift_client=aws, sleep=sleep)
    (statement,) = moto_statements().values()
    assert statement.cluster_identifier == "ndr-cluster" and statement.database == "ndr"
    assert statement.secret_arn == SECRET
    select, prefix, role = UNLOAD.match(statement.query_string).groups()
    assert select.replace("''", "'") == inventory_select(MONTH)
    assert "CAST(''2026-10-01'' AS DATE)" in select  # the quotes of the query are doubled inside UNLOAD ('...')
    assert re.fullmatch(
        rf"s3://{BUCKET}/ndr-prod/{PARTITION}/_runs/[0-9]{{8}}T[0-9]{{6}}Z-[0-9a-f]{{16}}/part-",
        prefix,
    )
    assert role == f"'{ROLE}'"
    assert sleep.polls == [5.0]  # type: ignore[attr-defined]
    target = f"s3://{BUCKET}/ndr-prod/{PARTITION}"
    assert read_partition(target).column("ip_address").to_pylist() == expected_ips()
    run_id = storage.read_manifest(target).run_id  # type: ignore[union-attr]
    assert prefix == f"{target}/_runs/{run_id}/part-"  # the UNLOAD went to the committed run's prefix
    assert everything(target) == ["_manifest.json", f"_runs/{run_id}/part-00000.parquet"]
    assert summary["engine"] == "redshift" and summary["statement_id"] == statement.id
    assert summary["rows"] == len(expected_ips())


@pytest.mark.parametrize("status", ["FAILED", "ABORTED"])
def test_redshift_failure_is_surfaced_and_keeps_the_previous_partition(aws: Any, inventory_db: Path, status: str):
    unload_inventory(RUNTIME, redshift_client=aws, sleep=fake_redshift(inventory_db))
    target = f"s3://{BUCKET}/ndr-prod/{PARTITION}"
    before = committed(target), everything(target)
    moto_statements().clear()
    message = rf"cluster ndr-cluster database ndr: statement [0-9a-f-]+ {status}"
    with pytest.raises(RedshiftStatementError, match=message):
        unload_inventory(RUNTIME, redshift_client=aws, sleep=fake_redshift(inventory_db, status))
    assert (committed(target), everything(target)) == before  # the failed run's prefix is gone


def test_redshift_finished_without_files_is_an_error(aws: Any, inventory_db: Path):
    with pytest.raises(ValueError, match="wrote no files"):
        unload_inventory(RUNTIME, redshift_client=aws, sleep=fake_redshift(inventory_db, write=False))


def test_redshift_timeout_cancels_the_statement(aws: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NDR_REDSHIFT_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("NDR_REDSHIFT_POLL_SECONDS", "10")
    now = [0.0]
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        now[0] += seconds

    message = r"still STARTED after 60 s \(NDR_REDSHIFT_TIMEOUT_SECONDS\); cancel requested"
    with pytest.raises(RedshiftTimeoutError, match=message):
        unload_inventory(RUNTIME, redshift_client=aws, sleep=sleep, clock=lambda: now[0])
    assert polls == [10.0] * 6
    (statement,) = moto_statements().values()
    assert statement.status == "ABORTED"
    assert storage.list_objects(f"s3://{BUCKET}/ndr-prod/inventory", include_hidden=True) == []


def test_redshift_role_defaults_to_the_default_keyword_and_timeout_to_the_jobs(
    aws: Any, inventory_db: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NDR_REDSHIFT_IAM_ROLE")
    now = [0.0]
    sleep = fake_redshift(inventory_db, status="STARTED")  # never finishes

    def advance(seconds: float) -> None:
        sleep(seconds)
        now[0] += seconds

    with pytest.raises(RedshiftTimeoutError, match="after 1800 s"):
        unload_inventory(RUNTIME, redshift_client=aws, sleep=advance, clock=lambda: now[0])
    (statement,) = moto_statements().values()
    assert UNLOAD.match(statement.query_string).group(3) == "default"
    assert len(sleep.polls) == 1800 / 5  # type: ignore[attr-defined]


def test_redshift_configuration_errors_point_to_the_local_stand_in(aws: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NDR_REDSHIFT_DATABASE")
    with pytest.raises(RedshiftConfigError, match=r"set NDR_REDSHIFT_DATABASE\); machine_inventory_unload: for a "
                       r"local run set NDR_INVENTORY_DUCKDB"):  # fmt: skip
        unload_inventory(RUNTIME, redshift_client=aws)
    assert moto_statements() == {}


def test_redshift_cannot_unload_to_a_local_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NDR_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("NDR_REDSHIFT_CLUSTER_ID", "c")
    monkeypatch.setenv("NDR_REDSHIFT_DATABASE", "d")
    with pytest.raises(ValueError, match="Redshift UNLOAD writes to S3 only"):
        unload_inventory(RUNTIME, redshift_client=object())


def test_duckdb_unload_to_an_s3_root(aws: Any, inventory_db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NDR_INVENTORY_DUCKDB", str(inventory_db))
    summary = run_machine_inventory_unload_from_runtime_config(RUNTIME)
    target = f"s3://{BUCKET}/ndr-prod/{PARTITION}"
    assert summary["output"] == target
    assert read_partition(target).column("ip_address").to_pylist() == expected_ips()
    assert moto_statements() == {}
