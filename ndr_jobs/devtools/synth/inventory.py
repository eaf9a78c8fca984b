"""Write a machine inventory for the synthetic network as a DuckDB file (the local Redshift table).

``python -m ndr_jobs.devtools.synth.inventory --out inventory.duckdb --hosts 50 --seed 7`` writes the table
``machine_inventory`` (:data:`TABLE_COLUMNS` and a ``valid_from``/``valid_to`` interval) for the machines of
:func:`ndr_jobs.devtools.synth.generator.build_network` with the same ``hosts`` and ``seed``; a local run reads it
through ``NDR_INVENTORY_DUCKDB``. Deterministic, sorted by ``ip_address``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from ndr_jobs.devtools.synth.generator import DEVELOPER, SERVER, WS, ZONES, build_network
from ndr_jobs.processing.machine_inventory_unload_job import DEFAULT_TABLE, INVENTORY_COLUMNS

TABLE = DEFAULT_TABLE
TABLE_COLUMNS: tuple[str, ...] = (*INVENTORY_COLUMNS, "valid_from", "valid_to")
VALID_FROM = date(2020, 1, 1)

#: the fixed infrastructure of ``build_network``, by address
_INFRA: dict[str, tuple[str, str, str, str]] = {
    "10.20.0.10": ("dc01", "Windows Server 2022", "domain_controller", "critical"),
    "10.20.0.12": ("dc02", "Windows Server 2022", "domain_controller", "critical"),
    "10.20.0.11": ("dns01", "Ubuntu 22.04", "dns_server", "critical"),
    "10.20.0.13": ("dns02", "Ubuntu 22.04", "dns_server", "critical"),  # segmented estate
    "10.12.0.11": ("dns-site03", "Ubuntu 22.04", "dns_server", "high"),  # segmented estate
    "10.20.0.20": ("files01", "Windows Server 2022", "file_server", "high"),
    "10.20.0.25": ("mail01", "Ubuntu 22.04", "mail_server", "high"),
    "10.20.0.30": ("intranet01", "Ubuntu 22.04", "web_server", "medium"),
    "10.20.0.40": ("db01", "Windows Server 2022", "database_server", "critical"),
}
_ROLE = {
    WS: ("ws", "workstation", "low"),
    DEVELOPER: ("dev", "developer", "medium"),
    SERVER: ("app", "app_server", "high"),
}
_OS = {
    WS: (("Windows 11", 0.85), ("macOS 14", 0.15)),
    DEVELOPER: (("macOS 14", 0.5), ("Ubuntu 22.04", 0.35), ("Windows 11", 0.15)),
    SERVER: (("Ubuntu 22.04", 0.7), ("Windows Server 2022", 0.3)),
}


@dataclass(frozen=True)
class Machine:
    """One inventory row."""

    ip_address: str
    hostname: str
    segment: str
    zone: str
    os: str
    role: str
    criticality: str
    valid_from: date = VALID_FROM
    valid_to: date | None = None

    def row(self) -> tuple[str | date | None, ...]:
        return tuple(getattr(self, c) for c in TABLE_COLUMNS)


def segment_of(ip: str) -> str:
    """The /24 of an IPv4 address: ``10.10.1.0/24``."""
    return ".".join(ip.split(".")[:3]) + ".0/24"


def inventory_machines(
    hosts: int, seed: int, missing_fraction: float = 0.0, decommissioned: int = 0, estate: str = "flat"
) -> list[Machine]:
    """The machines of the synthetic network for ``hosts`` and ``seed``, sorted by address.

    Every generated host, plus ``decommissioned`` machines that left before the traffic; ``missing_fraction`` leaves
    a seeded share of workstations and developer machines out (``docs/design/jobs.md``, Devtools).
    """
    if not 0 <= missing_fraction < 1:
        raise ValueError(f"missing_fraction must be in [0, 1), got {missing_fraction}")
    if decommissioned < 0 or decommissioned > 250:
        raise ValueError(f"decommissioned must be in [0, 250], got {decommissioned}")
    net = build_network(hosts, seed, estate)
    rng = np.random.default_rng([seed, 11])
    machines: list[Machine] = []
    counters = dict.fromkeys(_ROLE, 0)
    for address, role in zip(net.host_ids.tolist(), net.host_role.tolist(), strict=True):
        prefix, role_name, criticality = _ROLE[role]
        counters[role] += 1
        names, weights = zip(*_OS[role], strict=True)
        os_name = names[int(rng.choice(len(names), p=np.array(weights)))]
        dropped = role != SERVER and rng.random() < missing_fraction  # drawn for every host: stable per seed
        if dropped:
            continue
        ip = net.ips[address]
        machines.append(
            Machine(ip, f"{prefix}{counters[role]:05d}", segment_of(ip), ZONES[int(net.zone[address])], os_name,
                    role_name, criticality)
        )  # fmt: skip
    known = {m.ip_address for m in machines}
    for address, ip in enumerate(net.ips):
        if ip in _INFRA and ip not in known:
            hostname, os_name, role_name, criticality = _INFRA[ip]
            machines.append(
                Machine(ip, hostname, segment_of(ip), ZONES[int(net.zone[address])], os_name, role_name, criticality)
            )
    for i in range(decommissioned):
        ip = f"10.99.0.{i + 1}"
        machines.append(
            Machine(ip, f"old{i + 1:05d}", segment_of(ip), "trust", "Windows 10", "workstation", "low",
                    valid_from=VALID_FROM, valid_to=date(2023, 1, 1))
        )  # fmt: skip
    return sorted(machines, key=lambda m: tuple(int(p) for p in m.ip_address.split(".")))


def create_inventory_duckdb(
    path: str | Path,
    hosts: int,
    seed: int,
    table: str = TABLE,
    missing_fraction: float = 0.0,
    decommissioned: int = 0,
    estate: str = "flat",
) -> int:
    """Write a DuckDB file holding ``table`` with the synthetic network's machines; returns the row count.

    An existing file is replaced (written under a temporary name, then renamed).
    """
    import duckdb

    if not table.replace("_", "").isalnum():
        raise ValueError(f"table name {table!r} must be a plain identifier")
    machines = inventory_machines(hosts, seed, missing_fraction, decommissioned, estate)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            columns = ", ".join(f"{c} VARCHAR NOT NULL" for c in INVENTORY_COLUMNS)
            con.execute(f"CREATE TABLE {table} ({columns}, valid_from DATE NOT NULL, valid_to DATE)")
            con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(TABLE_COLUMNS))})",
                            [m.row() for m in machines])  # fmt: skip
            con.execute("CHECKPOINT")
        finally:
            con.close()
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return len(machines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ndr_jobs.devtools.synth.inventory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="the DuckDB file to write (replaced if present)")
    parser.add_argument("--hosts", type=int, required=True, help="as given to the traffic generator")
    parser.add_argument("--seed", type=int, required=True, help="as given to the traffic generator")
    parser.add_argument("--table", default=TABLE)
    parser.add_argument("--missing-fraction", type=float, default=0.0)
    parser.add_argument("--decommissioned", type=int, default=0)
    parser.add_argument("--estate", default="flat", help="as given to the traffic generator")
    a = parser.parse_args(argv)
    try:
        rows = create_inventory_duckdb(a.out, a.hosts, a.seed, a.table, a.missing_fraction, a.decommissioned, a.estate)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{a.out}: {rows} machines in table {a.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
