"""A seeded generator of PAN-OS 11.x TRAFFIC CSV syslog lines with labelled attacks.

Entry: :func:`generate`. Writes one folder per 15-minute batch at the ingestion layout and the attack labels
(:data:`ATTACK_CLASSES`) as JSON lines; the same config gives byte-identical files. The network and the attacks:
``docs/design/jobs.md`` (Devtools).
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ndr_jobs.datasets import storage

ATTACK_CLASSES: tuple[str, ...] = (
    "portscan", "beacon", "exfil_fast", "exfil_slow", "lateral",
    "dns_tunnel", "portscan_slow", "lateral_slow", "beacon_slow",
)  # fmt: skip
#: estate shapes: ``flat`` (the original network) and ``segmented`` (sites, own resolvers, time zones)
ESTATES: tuple[str, ...] = ("flat", "segmented")
BATCH_MS = 15 * 60 * 1000
FIELD_COUNT = 115  # PAN-OS 11.x TRAFFIC: positions 0..114

# --- tables ----------------------------------------------------------------------------------------------

ZONES = ("trust", "dev", "servers", "untrust")
TRUST, DEV, SERVERS, UNTRUST = range(4)
WS, DEVELOPER, SERVER = range(3)  # host roles: workstation, developer, server
ACTIONS = ("allow", "deny", "drop", "reset-both")
ALLOW, DENY, DROP, RESET_BOTH = range(4)
SUBTYPE_OF_ACTION = ("end", "deny", "drop", "end")
END_REASONS = ("tcp-fin", "tcp-rst-from-client", "tcp-rst-from-server", "aged-out", "policy-deny", "threat")
FIN, RST_CLIENT, RST_SERVER, AGED_OUT, POLICY_DENY, THREAT = range(6)
PROTOCOLS = ("tcp", "udp", "icmp")
TCP, UDP = 0, 1
RULES = (
    "allow-dns",
    "allow-web",
    "allow-internal",
    "allow-servers",
    "allow-admin",
    "deny-outbound",
    "deny-inbound",
    "interzone-default",
)
R_DNS, R_WEB, R_INTERNAL, R_SERVERS, R_ADMIN, R_DENY_OUT, R_DENY_IN, R_DEFAULT = range(len(RULES))
COUNTRIES = ("United States", "Germany", "Netherlands", "Ireland", "Singapore", "Japan", "Brazil", "France")
PRIVATE_LOCATION = "10.0.0.0-10.255.255.255"


@dataclass(frozen=True)
class App:
    """An application and its App-ID metadata (positions 105-109; characteristics are quoted)."""

    name: str
    subcategory: str
    category: str
    technology: str
    risk: int
    characteristics: str
    url_category: str = "any"


# App-ID characteristics (position 109), quoted in the log because they contain commas
_XFER, _TUNNEL, _VULN, _MALWARE, _EVASIVE, _PERVASIVE, _SAAS = (
    "able-to-transfer-file", "tunnel-other-application", "has-known-vulnerability", "used-by-malware",
    "evasive", "pervasive-use", "is-saas",
)  # fmt: skip


def _chars(*names: str) -> str:
    return ",".join(names)


APPS: tuple[App, ...] = (
    App("dns-base", "infrastructure", "networking", "network-protocol", 3, _chars(_XFER, _TUNNEL, _VULN, _PERVASIVE)),
    App("ssl", "encrypted-tunnel", "networking", "browser-based", 4, _chars(_XFER, _TUNNEL, _VULN, _PERVASIVE),
        "computer-and-internet-info"),
    App("web-browsing", "internet-utility", "general-internet", "browser-based", 4,
        _chars(_XFER, _TUNNEL, _VULN, _MALWARE, _EVASIVE, _PERVASIVE), "business-and-economy"),
    App("ms-office365-base", "office-programs", "business-systems", "browser-based", 2,
        _chars(_XFER, _VULN, _PERVASIVE, _SAAS), "computer-and-internet-info"),
    App("ntp-base", "infrastructure", "networking", "client-server", 2, _chars(_TUNNEL)),
    App("ldap", "management", "business-systems", "client-server", 2, _chars(_VULN, _PERVASIVE)),
    App("kerberos", "auth-service", "business-systems", "client-server", 1, _chars(_VULN, _PERVASIVE)),
    App("ms-ds-smb-base", "file-sharing", "collaboration", "client-server", 3,
        _chars(_XFER, _VULN, _MALWARE, _PERVASIVE)),
    App("ssh", "encrypted-tunnel", "networking", "client-server", 4,
        _chars(_XFER, _TUNNEL, _VULN, _EVASIVE, _PERVASIVE)),
    App("git-base", "software-development", "business-systems", "browser-based", 2, _chars(_XFER, _VULN, _PERVASIVE),
        "computer-and-internet-info"),
    App("mssql-db", "database", "business-systems", "client-server", 2, _chars(_XFER, _VULN)),
    App("ms-rdp", "remote-access", "networking", "client-server", 4,
        _chars(_XFER, _TUNNEL, _VULN, _MALWARE, _EVASIVE, _PERVASIVE)),
    App("smtp-base", "email", "collaboration", "client-server", 5, _chars(_XFER, _VULN, _MALWARE, _PERVASIVE)),
    App("msrpc-base", "infrastructure", "networking", "client-server", 2, _chars(_VULN, _PERVASIVE)),
    App("netbios-ns", "infrastructure", "networking", "client-server", 2, _chars(_VULN, _PERVASIVE)),
    App("incomplete", "", "", "", 1, ""),
    App("not-applicable", "", "", "", 1, ""),
)  # fmt: skip
APP_INDEX = {a.name: i for i, a in enumerate(APPS)}

# destination kinds of a service
D_DNS, D_FAV, D_O365, D_NTP, D_DC, D_FILES, D_INTRANET, D_APPSERVER, D_GIT, D_DB, D_UPDATES, D_MAIL = range(12)


@dataclass(frozen=True)
class Service:
    """A kind of session: application, transport, port, destination kind, rule and size/duration medians."""

    app: str
    proto: int
    port: int
    dst: int
    rule: int
    sent: float  # median bytes client -> server
    received: float  # median bytes server -> client
    sigma: float  # log-normal spread of the byte counts
    elapsed: float  # median seconds (0: instantaneous)


SERVICES: dict[str, Service] = {
    "dns": Service("dns-base", UDP, 53, D_DNS, R_DNS, 70, 180, 0.3, 0),
    "web_ssl": Service("ssl", TCP, 443, D_FAV, R_WEB, 1800, 25_000, 1.2, 15),
    "web_http": Service("web-browsing", TCP, 80, D_FAV, R_WEB, 900, 12_000, 1.2, 8),
    "o365": Service("ms-office365-base", TCP, 443, D_O365, R_WEB, 3000, 40_000, 1.3, 30),
    "ntp": Service("ntp-base", UDP, 123, D_NTP, R_WEB, 90, 90, 0.05, 0),
    "ldap": Service("ldap", TCP, 389, D_DC, R_INTERNAL, 1200, 3500, 0.6, 2),
    "kerberos": Service("kerberos", TCP, 88, D_DC, R_INTERNAL, 1500, 1400, 0.4, 1),
    "smb": Service("ms-ds-smb-base", TCP, 445, D_FILES, R_INTERNAL, 20_000, 150_000, 1.5, 60),
    "intranet": Service("ssl", TCP, 443, D_INTRANET, R_INTERNAL, 1500, 20_000, 1.0, 10),
    "ssh": Service("ssh", TCP, 22, D_APPSERVER, R_SERVERS, 5000, 30_000, 1.2, 300),
    "git": Service("git-base", TCP, 443, D_GIT, R_WEB, 4000, 200_000, 1.4, 20),
    "db": Service("mssql-db", TCP, 1433, D_DB, R_SERVERS, 2000, 50_000, 1.3, 5),
    "updates": Service("ssl", TCP, 443, D_UPDATES, R_WEB, 1000, 500_000, 1.5, 40),
    "app_web": Service("web-browsing", TCP, 8080, D_APPSERVER, R_INTERNAL, 1000, 8000, 1.0, 5),
    "rdp_admin": Service("ms-rdp", TCP, 3389, D_APPSERVER, R_ADMIN, 50_000, 800_000, 1.0, 900),
    "smtp_relay": Service("smtp-base", TCP, 25, D_MAIL, R_SERVERS, 30_000, 1500, 1.2, 3),
}
SERVICE_NAMES = tuple(SERVICES)
#: the service mix of each role (probabilities sum to 1)
MIX: dict[int, dict[str, float]] = {
    WS: {"dns": 0.30, "web_ssl": 0.30, "web_http": 0.05, "o365": 0.12, "ntp": 0.01, "ldap": 0.04,
         "kerberos": 0.04, "smb": 0.06, "intranet": 0.05, "app_web": 0.03},
    DEVELOPER: {"dns": 0.25, "web_ssl": 0.22, "web_http": 0.03, "o365": 0.05, "ntp": 0.01, "ldap": 0.02,
                "kerberos": 0.02, "smb": 0.03, "intranet": 0.04, "ssh": 0.12, "git": 0.12, "app_web": 0.08,
                "rdp_admin": 0.01},
    SERVER: {"dns": 0.30, "db": 0.38, "updates": 0.08, "ntp": 0.07, "ldap": 0.08, "kerberos": 0.07,
             "smtp_relay": 0.02},
}  # fmt: skip
#: sessions per host per hour at the diurnal peak (before each host's own log-normal factor)
PEAK_RATE = {WS: 240.0, DEVELOPER: 300.0, SERVER: 400.0}
#: background denies per internal host per hour, and internet scanner probes per 50 hosts per hour
DENY_RATE = 2.0
SCANNER_RATE = 30.0


@dataclass(frozen=True)
class Device:
    """A firewall that logs: its name, serial and whether its syslog lines carry a BSD header."""

    name: str
    serial: str
    header: bool


DEVICES = (Device("fw01", "013201001234", True), Device("fw02", "013201005678", False))
FW_PUBLIC_IP = "203.0.113.10"

# --- configuration and result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``start`` is rounded down to a 15-minute boundary; ``hours`` rounds up to batches."""

    start: datetime
    hours: float
    hosts: int
    seed: int
    attacks: tuple[str, ...] = ()
    org_id: str = "acme"
    project_name: str = "ndr-prod"
    feature_spec_version: str = "v1"
    files_per_batch: int = 3
    gzip: bool = False
    noise_rate: float = 0.0
    rate_scale: float = 1.0
    estate: str = "flat"

    def __post_init__(self) -> None:
        if self.estate not in ESTATES:
            raise ValueError(f"unknown estate {self.estate!r}; known: {', '.join(ESTATES)}")
        unknown = sorted(set(self.attacks) - set(ATTACK_CLASSES))
        if unknown:
            raise ValueError(f"unknown attack classes {unknown}; known: {', '.join(ATTACK_CLASSES)}")
        if self.hosts < 3:
            raise ValueError("--hosts must be at least 3 (one workstation, developer and server each)")
        if self.hours <= 0 or self.files_per_batch < 1 or not 0 <= self.noise_rate < 1 or self.rate_scale <= 0:
            raise ValueError("hours and rate_scale must be positive, files_per_batch >= 1, 0 <= noise_rate < 1")


@dataclass
class SynthResult:
    """What :func:`generate` wrote."""

    raw_prefix: str
    labels_path: str
    batches: int = 0
    files: int = 0
    rows: int = 0
    attack_rows: dict[str, int] = field(default_factory=dict)
    noise_rows: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


# --- the network -------------------------------------------------------------------------------------------


def _public_ips(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct random public IPv4 addresses (no private, shared, loopback, link-local, multicast...)."""
    out: list[str] = []
    seen: set[int] = set()
    while len(out) < n:
        for v in rng.integers(0x01000000, 0xE0000000, size=2 * (n - len(out)), dtype=np.int64).tolist():
            a, b = v >> 24, (v >> 16) & 0xFF
            if (
                a in (10, 127, 0)
                or (a == 100 and 64 <= b < 128)
                or (a == 169 and b == 254)
                or (a == 172 and 16 <= b < 32)
                or (a == 192 and b in (0, 168))
                or (a == 198 and b in (18, 19, 51))
                or (a == 203 and b == 0)
                or v in seen
            ):
                continue
            seen.add(v)
            out.append(f"{a}.{b}.{(v >> 8) & 0xFF}.{v & 0xFF}")
            if len(out) == n:
                break
    return out


@dataclass
class Network:
    """Every address (an id is an index into ``ips``) and what the generator knows about it."""

    ips: list[str]
    zone: np.ndarray  # per address
    device: np.ndarray  # per address: the firewall that logs its sessions
    location: list[str]  # per address
    user: list[str]  # per address ('' for none)
    host_ids: np.ndarray  # internal hosts that originate traffic
    host_role: np.ndarray
    host_rate: np.ndarray  # sessions per hour at the diurnal peak
    favourites: np.ndarray  # [hosts, K] address ids
    fixed: dict[int, np.ndarray]  # destination kind -> candidate address ids
    internet: np.ndarray  # the popularity-ordered internet pool
    spare_internet: list[str]  # fresh addresses for attack infrastructure (not yet in ips)
    # segmented estate only (None: every host uses the fixed DNS pool, on UTC office hours)
    host_dns: np.ndarray | None = None  # [hosts, 2]: each host's primary and secondary resolver
    host_offset: np.ndarray | None = None  # [hosts]: the host's site's UTC offset in hours
    public_dns: int = -1  # a public resolver some developers query directly (-1: none)

    def add_external(self, ip: str, rng: np.random.Generator) -> int:
        """Register an internet address (attack infrastructure) and return its id."""
        self.ips.append(ip)
        self.zone = np.append(self.zone, UNTRUST)
        self.device = np.append(self.device, 0)
        self.location.append(COUNTRIES[int(rng.integers(len(COUNTRIES)))])
        self.user.append("")
        return len(self.ips) - 1


FAVOURITES = 12
INTERNET_POOL = 3000


#: the segmented estate's workstation sites: (second octet, share of the workstations, UTC offset in hours)
SITES: tuple[tuple[int, float, float], ...] = ((10, 0.5, 0.0), (11, 0.3, 0.0), (12, 0.2, 8.0))
#: the segmented estate's resolvers: two at the data centre, one at the offset site
DNS_DC2, DNS_SITE = "10.20.0.13", "10.12.0.11"


def build_network(hosts: int, seed: int, estate: str = "flat") -> Network:
    """The hosts, servers and internet pool for a seed; ``estate`` as :data:`ESTATES` (design: jobs.md)."""
    if estate not in ESTATES:
        raise ValueError(f"unknown estate {estate!r}; known: {', '.join(ESTATES)}")
    rng = np.random.default_rng([seed, 1])
    segmented = estate == "segmented"
    n_server = max(1, round((0.2 if segmented else 0.15) * hosts))
    n_dev = max(1, round((0.1 if segmented else 0.15) * hosts))
    n_ws = hosts - n_server - n_dev
    ips: list[str] = []
    zone: list[int] = []
    device: list[int] = []
    user: list[str] = []
    role: list[int] = []

    def add(ip: str, z: int, d: int, u: str = "") -> int:
        ips.append(ip)
        zone.append(z)
        device.append(d)
        user.append(u)
        return len(ips) - 1

    host_ids = []
    offsets: list[float] = []
    site_of_ws = np.zeros(n_ws, dtype=np.int64)
    if segmented:  # contiguous blocks of workstations per site, in the sites' shares
        bounds = np.round(np.cumsum([share for _, share, _ in SITES]) * n_ws).astype(int)
        site_of_ws = np.searchsorted(bounds, np.arange(n_ws), side="right")
    seen_in_site = dict.fromkeys(range(len(SITES)), 0)
    for i in range(n_ws):
        site = int(site_of_ws[i])
        octet, _, offset = SITES[site] if segmented else (10, 1.0, 0.0)
        j = seen_in_site[site]
        seen_in_site[site] += 1
        host_ids.append(add(f"10.{octet}.{1 + j // 200}.{10 + j % 200}", TRUST, 0, f"acme\\ws{i:05d}"))
        role.append(WS)
        offsets.append(offset)
    for i in range(n_dev):
        host_ids.append(add(f"10.30.{1 + i // 200}.{10 + i % 200}", DEV, 0, f"acme\\dev{i:05d}"))
        role.append(DEVELOPER)
    app_servers = []
    for i in range(n_server):
        app_servers.append(add(f"10.20.{1 + i // 200}.{10 + i % 200}", SERVERS, 1))
        host_ids.append(app_servers[-1])
        role.append(SERVER)
    dc = [add("10.20.0.10", SERVERS, 1), add("10.20.0.12", SERVERS, 1)]
    dns = [add("10.20.0.11", SERVERS, 1)]
    if segmented:
        dns += [add(DNS_DC2, SERVERS, 1), add(DNS_SITE, TRUST, 0)]
    files = [add("10.20.0.20", SERVERS, 1)]
    mail = [add("10.20.0.25", SERVERS, 1)]
    intranet = [add("10.20.0.30", SERVERS, 1)]
    db = [add("10.20.0.40", SERVERS, 1)]
    add(FW_PUBLIC_IP, UNTRUST, 0)
    n_internal = len(ips)

    public = _public_ips(rng, INTERNET_POOL + 40 + 64)
    internet = np.array([add(ip, UNTRUST, 0) for ip in public[:INTERNET_POOL]], dtype=np.int32)
    o365, ntp, git, updates = internet[:8], internet[8:10], internet[10:14], internet[14:20]
    location = [PRIVATE_LOCATION] * n_internal + [
        COUNTRIES[int(c)] for c in rng.integers(len(COUNTRIES), size=len(ips) - n_internal)
    ]

    weights = 1.0 / np.arange(1, INTERNET_POOL + 1) ** 1.1
    weights /= weights.sum()
    favourites = np.stack(
        [rng.choice(internet, size=FAVOURITES, replace=False, p=weights) for _ in range(hosts)]
    ).astype(np.int32)
    host_role = np.array(role, dtype=np.int8)
    host_rate = np.array([PEAK_RATE[r] for r in role]) * rng.lognormal(0.0, 0.5, size=hosts)
    host_dns = host_offset = None
    public_dns = -1
    if segmented:
        host_offset = np.array(offsets + [0.0] * (hosts - n_ws))
        at_site = np.zeros(hosts, dtype=bool)
        at_site[:n_ws] = site_of_ws == len(SITES) - 1
        pairs = np.where(rng.random(hosts) < 0.5, 0, 1)  # which data-centre resolver is primary
        host_dns = np.stack([np.array(dns[:2])[pairs], np.array(dns[:2])[1 - pairs]], axis=1).astype(np.int32)
        host_dns[at_site, 0], host_dns[at_site, 1] = dns[2], dns[0]
        public_dns = int(internet[20])
    return Network(
        ips=ips,
        zone=np.array(zone, dtype=np.int8),
        device=np.array(device, dtype=np.int8),
        location=location,
        user=user,
        host_ids=np.array(host_ids, dtype=np.int32),
        host_role=host_role,
        host_rate=host_rate,
        favourites=favourites,
        fixed={
            D_DNS: np.array(dns, np.int32),
            D_O365: o365,
            D_NTP: ntp,
            D_DC: np.array(dc, np.int32),
            D_FILES: np.array(files, np.int32),
            D_INTRANET: np.array(intranet, np.int32),
            D_APPSERVER: np.array(app_servers, np.int32),
            D_GIT: git,
            D_DB: np.array(db, np.int32),
            D_UPDATES: updates,
            D_MAIL: np.array(mail, np.int32),
        },
        internet=internet,
        spare_internet=public[INTERNET_POOL:],
        host_dns=host_dns,
        host_offset=host_offset,
        public_dns=public_dns,
    )


# --- sessions as columns -----------------------------------------------------------------------------------

COLUMNS = (
    "t", "src", "dst", "sport", "dport", "app", "proto", "action", "rule", "end",
    "sent", "received", "pkts_sent", "pkts_received", "elapsed", "attack",
)  # fmt: skip
_DTYPES = {"t": np.int64, "sent": np.int64, "received": np.int64, "pkts_sent": np.int64, "pkts_received": np.int64,
           "elapsed": np.int64, "src": np.int32, "dst": np.int32, "sport": np.int32, "dport": np.int32,
           "app": np.int16, "proto": np.int8, "action": np.int8, "rule": np.int8, "end": np.int8,
           "attack": np.int8}  # fmt: skip
NO_ATTACK = -1


def _sessions(n: int, **cols: Any) -> dict[str, np.ndarray]:
    """Columns for ``n`` sessions; scalars broadcast; ``attack`` defaults to background."""
    cols.setdefault("attack", NO_ATTACK)
    out = {}
    for name in COLUMNS:
        value = cols[name]
        out[name] = np.broadcast_to(np.asarray(value, dtype=_DTYPES[name]), (n,)).copy()
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return _sessions(0, **{c: 0 for c in COLUMNS})
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


def _take(cols: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[index] for c, v in cols.items()}


def _lognormal(rng: np.random.Generator, median: float | np.ndarray, sigma: float | np.ndarray, n: int) -> np.ndarray:
    return np.maximum(1, (np.asarray(median) * np.exp(np.asarray(sigma) * rng.standard_normal(n)))).astype(np.int64)


def _packets(rng: np.random.Generator, nbytes: np.ndarray, mean_size: float = 900.0) -> np.ndarray:
    size = rng.uniform(0.5 * mean_size, 1.5 * mean_size, size=len(nbytes))
    return np.maximum(1, np.ceil(nbytes / size)).astype(np.int64)


def _office(moment: datetime) -> float:
    hour = moment.hour + moment.minute / 60
    office = float(np.exp(-0.5 * ((hour - 13.0) / 3.2) ** 2)) * (0.85 if 12.0 <= hour < 13.5 else 1.0)
    return office * 0.15 if moment.weekday() >= 5 else office


def diurnal(role: np.ndarray, t_ms: int, offset_hours: np.ndarray | None = None) -> np.ndarray:
    """The activity factor (0..1] of each role at a UTC time: workstations follow office hours (local to
    ``offset_hours`` per host when given: the weekend is the local one too)."""
    moment = datetime.fromtimestamp(t_ms / 1000, UTC)
    if offset_hours is None:
        office: float | np.ndarray = _office(moment)
    else:
        by_offset = {o: _office(moment + timedelta(hours=o)) for o in np.unique(offset_hours).tolist()}
        office = np.array([by_offset[o] for o in offset_hours.tolist()])
    people = 0.08 + 0.92 * office
    servers = 0.7 + 0.3 * office
    return np.where(role == SERVER, servers, people)


def background(net: Network, seed: int, batch_start_ms: int, rate_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Normal sessions and background denies of one batch (depends only on seed, network and time)."""
    rng = np.random.default_rng([seed, 3, batch_start_ms // BATCH_MS])
    hours = BATCH_MS / 3_600_000
    lam = net.host_rate * diurnal(net.host_role, batch_start_ms + BATCH_MS // 2, net.host_offset) * hours * rate_scale
    counts = rng.poisson(lam)
    host = np.repeat(np.arange(len(net.host_ids)), counts)
    n = len(host)
    svc = np.empty(n, dtype=np.int16)
    for role, mix in MIX.items():
        mask = net.host_role[host] == role
        names = list(mix)
        choice = rng.choice(len(names), size=int(mask.sum()), p=np.array(list(mix.values())))
        svc[mask] = np.array([SERVICE_NAMES.index(s) for s in names], dtype=np.int16)[choice]
    services = [SERVICES[s] for s in SERVICE_NAMES]
    field_of = {name: np.array([getattr(s, name) for s in services]) for name in Service.__dataclass_fields__}
    dst = np.empty(n, dtype=np.int32)
    kinds = field_of["dst"][svc]
    for kind in np.unique(kinds):
        mask = kinds == kind
        k = int(mask.sum())
        if kind == D_FAV:
            fav_w = 1.0 / np.arange(1, FAVOURITES + 1)
            column = rng.choice(FAVOURITES, size=k, p=fav_w / fav_w.sum())
            dst[mask] = net.favourites[host[mask], column]
        elif kind == D_DNS and net.host_dns is not None:  # own resolvers: primary 80 %, secondary 20 %
            dst[mask] = net.host_dns[host[mask], (rng.random(k) < 0.2).astype(np.int64)]
            direct = (net.host_role[host[mask]] == DEVELOPER) & (rng.random(k) < 0.05)
            dst[np.flatnonzero(mask)[direct]] = net.public_dns  # a public resolver, straight out
        else:
            pool = net.fixed[int(kind)]
            if len(pool) == 0:  # pragma: no cover - every pool has members with hosts >= 3
                pool = net.fixed[D_INTRANET]
            dst[mask] = pool[rng.integers(len(pool), size=k)]
    proto = field_of["proto"][svc]
    sent = _lognormal(rng, field_of["sent"][svc], field_of["sigma"][svc], n)
    received = _lognormal(rng, field_of["received"][svc], field_of["sigma"][svc], n)
    median_elapsed = field_of["elapsed"][svc]
    elapsed = np.where(median_elapsed > 0, _lognormal(rng, np.maximum(median_elapsed, 1), 0.8, n), 0)
    tcp_end = rng.choice([FIN, RST_CLIENT, RST_SERVER, AGED_OUT], size=n, p=[0.86, 0.06, 0.05, 0.03])
    normal = _sessions(
        n,
        t=batch_start_ms + rng.integers(0, BATCH_MS, size=n),
        src=net.host_ids[host],
        dst=dst,
        sport=rng.integers(49152, 65536, size=n),
        dport=field_of["port"][svc],
        app=np.array([APP_INDEX[a] for a in field_of["app"]])[svc],
        proto=proto,
        action=ALLOW,
        rule=field_of["rule"][svc],
        end=np.where(proto == UDP, AGED_OUT, tcp_end),
        sent=sent,
        received=received,
        pkts_sent=_packets(rng, sent),
        pkts_received=_packets(rng, received, 1200.0),
        elapsed=elapsed,
    )

    # outbound denies: SMTP and NetBIOS to the internet, from workstations and developers
    people = np.flatnonzero(net.host_role != SERVER)
    n_deny = int(rng.poisson(DENY_RATE * hours * len(people) * rate_scale))
    smtp = rng.random(n_deny) < 0.5
    out_sent = rng.integers(60, 80, size=n_deny)
    denies = _sessions(
        n_deny,
        t=batch_start_ms + rng.integers(0, BATCH_MS, size=n_deny),
        src=net.host_ids[people[rng.integers(len(people), size=n_deny)]],
        dst=net.internet[rng.integers(len(net.internet), size=n_deny)],
        sport=rng.integers(49152, 65536, size=n_deny),
        dport=np.where(smtp, 25, 137),
        app=np.where(smtp, APP_INDEX["smtp-base"], APP_INDEX["netbios-ns"]),
        proto=np.where(smtp, TCP, UDP),
        action=np.where(smtp, DENY, DROP),
        rule=R_DENY_OUT,
        end=POLICY_DENY,
        sent=out_sent,
        received=0,
        pkts_sent=1,
        pkts_received=0,
        elapsed=0,
    )
    # internet scanners probing the firewall's public address
    n_scan = int(rng.poisson(SCANNER_RATE * hours * len(net.host_ids) / 50 * rate_scale))
    fw = net.ips.index(FW_PUBLIC_IP)
    scanners = _sessions(
        n_scan,
        t=batch_start_ms + rng.integers(0, BATCH_MS, size=n_scan),
        src=net.internet[rng.integers(len(net.internet), size=n_scan)],
        dst=fw,
        sport=rng.integers(1024, 65536, size=n_scan),
        dport=rng.choice([22, 23, 80, 443, 445, 1433, 3389, 5900, 8080], size=n_scan),
        app=APP_INDEX["not-applicable"],
        proto=TCP,
        action=np.where(rng.random(n_scan) < 0.7, DENY, DROP),
        rule=R_DENY_IN,
        end=POLICY_DENY,
        sent=rng.integers(54, 80, size=n_scan),
        received=0,
        pkts_sent=1,
        pkts_received=0,
        elapsed=0,
    )
    return _concat([normal, denies, scanners])


# --- attacks -----------------------------------------------------------------------------------------------


@dataclass
class Label:
    """One labelled (attack, src, dst) relation."""

    attack_id: str
    attack: str
    src_ip: str
    dst_ip: str
    dst_ports: list[int]
    start_ms: int
    end_ms: int
    sessions: int
    bytes_sent: int

    def as_json(self) -> dict[str, Any]:
        """The JSON line of this label."""
        return {
            "attack_id": self.attack_id,
            "attack": self.attack,
            "src_ip": self.src_ip,
            "dst_ip": self.dst_ip,
            "dst_ports": self.dst_ports,
            "start": _iso_ms(self.start_ms),
            "end": _iso_ms(self.end_ms),
            "sessions": self.sessions,
            "bytes_sent": self.bytes_sent,
        }


def _iso_ms(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _start_in(rng: np.random.Generator, span: tuple[int, int], duration_ms: int) -> int:
    lo, hi = span
    return int(lo + rng.integers(0, max(1, hi - lo - duration_ms)))


def _portscan(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    targets = np.concatenate([net.fixed[D_APPSERVER], net.fixed[D_INTRANET]])
    dst = int(targets[rng.integers(len(targets))])
    n = int(rng.integers(600, 1001))
    low = rng.choice(np.arange(1, 1025), size=int(0.7 * n), replace=False)
    high = rng.choice(np.arange(1025, 65536), size=n - len(low), replace=False)
    ports = rng.permutation(np.concatenate([low, high]))
    duration = int(rng.integers(120_000, 300_001))
    t0 = _start_in(rng, span, duration)
    return _probes(rng, n, t0 + np.sort(rng.integers(0, duration, size=n)), src, dst, ports, [22, 443, 8080])


def _probes(rng: np.random.Generator, n: int, t: np.ndarray, src: int, dst: Any, dport: np.ndarray,
            listening_ports: list[int]) -> dict[str, np.ndarray]:  # fmt: skip
    """A scan's probes: the policy allows a few service ports (a TCP handshake, reset by whoever is not
    listening) and denies the rest."""
    allowed = np.isin(dport, [22, 80, 88, 389, 443, 445, 1433, 3389, 8080])
    listening = np.isin(dport, listening_ports)
    return _sessions(
        n,
        t=t,
        src=src,
        dst=dst,
        sport=rng.integers(40000, 60000, size=n),
        dport=dport,
        app=np.where(allowed, APP_INDEX["incomplete"], APP_INDEX["not-applicable"]),
        proto=TCP,
        action=np.where(allowed, ALLOW, DENY),
        rule=np.where(allowed, R_INTERNAL, R_DEFAULT),
        end=np.where(allowed, np.where(listening, RST_CLIENT, RST_SERVER), POLICY_DENY),
        sent=np.where(allowed & listening, 134, 74),
        received=np.where(allowed, 60, 0),
        pkts_sent=np.where(allowed & listening, 2, 1),
        pkts_received=np.where(allowed, 1, 0),
        elapsed=0,
    )


def _beacon(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    c2 = net.add_external(net.spare_internet.pop(), rng)
    period = int(rng.choice([60, 120, 300, 600])) * 1000
    jitter = float(rng.uniform(0.1, 0.2))
    t = span[0] + int(rng.integers(0, max(1, (span[1] - span[0]) // 10)))
    times = []
    while t < span[1]:
        times.append(t)
        t += int(period * (1 + rng.uniform(-jitter, jitter)))
    n = len(times)
    tasking = rng.random(n) < 0.03
    sent = rng.normal(420, 25, size=n).astype(np.int64)
    received = (rng.normal(1350, 90, size=n) * np.where(tasking, 20, 1)).astype(np.int64)
    return _sessions(
        n,
        t=np.array(times),
        src=src,
        dst=c2,
        sport=rng.integers(49152, 65536, size=n),
        dport=443,
        app=APP_INDEX["ssl"],
        proto=TCP,
        action=ALLOW,
        rule=R_WEB,
        end=FIN,
        sent=sent,
        received=received,
        pkts_sent=rng.integers(5, 9, size=n),
        pkts_received=rng.integers(4, 8, size=n),
        elapsed=rng.integers(0, 3, size=n),
    )


def _exfil(
    rng: np.random.Generator, net: Network, src: int, span: tuple[int, int], fast: bool
) -> dict[str, np.ndarray]:
    dst = net.add_external(net.spare_internet.pop(), rng)
    if fast:
        duration = int(rng.integers(10, 26)) * 60_000
        n = int(rng.integers(20, 41))
        t0 = _start_in(rng, span, duration)
        times = t0 + np.sort(rng.integers(0, duration, size=n))
        sent = _lognormal(rng, 150e6, 0.3, n)
        elapsed = rng.integers(30, 121, size=n)
    else:
        interval = int(rng.integers(20, 41)) * 60_000
        t = span[0] + int(rng.integers(0, interval))
        ts = []
        while t < span[1] or len(ts) < 2:
            ts.append(min(t, span[1] - 1))
            t += int(interval * rng.uniform(0.8, 1.2))
        times = np.array(ts)
        n = len(ts)
        sent = _lognormal(rng, 6e6, 0.4, n)
        elapsed = rng.integers(5, 40, size=n)
    received = _lognormal(rng, 40_000 if fast else 8000, 0.5, n)
    return _sessions(
        n,
        t=times,
        src=src,
        dst=dst,
        sport=rng.integers(49152, 65536, size=n),
        dport=443,
        app=APP_INDEX["ssl"],
        proto=TCP,
        action=ALLOW,
        rule=R_WEB,
        end=FIN,
        sent=sent,
        received=received,
        pkts_sent=_packets(rng, sent, 1400.0),
        pkts_received=_packets(rng, received, 200.0),
        elapsed=elapsed,
    )


def _lateral(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    candidates = np.concatenate([net.host_ids[net.host_role != SERVER], net.fixed[D_APPSERVER], net.fixed[D_FILES]])
    candidates = candidates[candidates != src]
    k = min(len(candidates), int(rng.integers(8, 21)))
    targets = rng.choice(candidates, size=k, replace=False)
    duration = int(rng.integers(20, 46)) * 60_000
    t0 = _start_in(rng, span, duration)
    per_target = rng.integers(1, 5, size=k)
    dst = np.repeat(targets, per_target)
    n = len(dst)
    port = rng.choice([445, 135, 3389], size=n, p=[0.6, 0.2, 0.2])
    ok = rng.random(n) < 0.7
    smb, rdp = port == 445, port == 3389
    sent = np.where(smb, _lognormal(rng, 300_000, 1.0, n), np.where(rdp, _lognormal(rng, 40_000, 0.8, n), 2000))
    received = np.where(rdp, _lognormal(rng, 600_000, 0.8, n), _lognormal(rng, 6000, 0.6, n))
    sent, received = np.where(ok, sent, 74), np.where(ok, received, 60)
    return _sessions(
        n,
        t=t0 + np.sort(rng.integers(0, duration, size=n)),
        src=src,
        dst=dst,
        sport=rng.integers(49152, 65536, size=n),
        dport=port,
        app=np.where(smb, APP_INDEX["ms-ds-smb-base"], np.where(rdp, APP_INDEX["ms-rdp"], APP_INDEX["msrpc-base"])),
        proto=TCP,
        action=ALLOW,
        rule=np.where(rdp, R_ADMIN, R_INTERNAL),
        end=np.where(ok, FIN, RST_SERVER),
        sent=sent,
        received=received,
        pkts_sent=_packets(rng, sent),
        pkts_received=_packets(rng, received, 1200.0),
        elapsed=np.where(ok, np.where(rdp, rng.integers(120, 1800, size=n), rng.integers(1, 30, size=n)), 0),
    )


def _dns_tunnel(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """Many small UDP/53 queries straight to one outside address (not a resolver of the estate)."""
    dst = net.add_external(net.spare_internet.pop(), rng)
    duration = int(rng.integers(45, 181)) * 60_000
    per_minute = float(np.exp(rng.uniform(np.log(2.0), np.log(30.0))))  # 30 .. 450 queries per 15 minutes
    n = max(2, int(per_minute * duration / 60_000))
    t0 = _start_in(rng, span, duration)
    sent = _lognormal(rng, 160, 0.25, n)  # a query with an encoded payload in its name
    received = _lognormal(rng, 220, 0.3, n)
    return _sessions(
        n,
        t=t0 + np.sort(rng.integers(0, duration, size=n)),
        src=src,
        dst=dst,
        sport=rng.integers(49152, 65536, size=n),
        dport=53,
        app=APP_INDEX["dns-base"],
        proto=UDP,
        action=ALLOW,
        rule=R_DNS,
        end=AGED_OUT,
        sent=sent,
        received=received,
        pkts_sent=1,
        pkts_received=1,
        elapsed=0,
    )


#: the ports a slow scan probes first (a "top ports" list), then others below 1024
TOP_PORTS = (21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 389, 443, 445, 465, 587, 636, 993, 995, 1433,
             1521, 2049, 3306, 3389, 5432, 5900, 5985, 5986, 6379, 8000, 8080, 8443, 9200, 27017)  # fmt: skip


def _portscan_slow(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """One probe every 20-60 s to 1-3 internal hosts, top ports first, for hours: few probes per window."""
    pool = np.concatenate([net.fixed[D_APPSERVER], net.fixed[D_INTRANET], net.host_ids[net.host_role != SERVER]])
    pool = pool[pool != src]
    targets = rng.choice(pool, size=min(len(pool), int(rng.integers(1, 4))), replace=False)
    others = rng.permutation(np.setdiff1d(np.arange(1, 1025), TOP_PORTS))
    ports = np.concatenate([rng.permutation(np.array(TOP_PORTS)), others])
    gaps = rng.integers(20_000, 60_001, size=len(ports) * len(targets))
    t0 = span[0] + int(rng.integers(0, max(1, (span[1] - span[0]) // 10)))
    times = t0 + np.cumsum(gaps) - gaps[0]
    n = int(np.searchsorted(times, span[1]))
    n = max(n, 2)
    dst = np.tile(targets, len(ports))[:n]  # each port to every target in turn
    dport = np.repeat(ports, len(targets))[:n]
    return _probes(rng, n, times[:n], src, dst, dport, [22, 443, 445, 8080])


def _lateral_slow(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """Hands-on-keyboard movement over hours: per target, an SMB admin-share copy, a service created over RPC
    (port 135, then a dynamic port) and, for some, an interactive RDP session; 15-40 minutes between targets."""
    pool = np.concatenate([net.host_ids[net.host_role != SERVER], net.fixed[D_APPSERVER], net.fixed[D_FILES]])
    pool = pool[pool != src]
    k = min(len(pool), int(rng.integers(3, 7)))
    targets = rng.choice(pool, size=k, replace=False)
    t = span[0] + int(rng.integers(0, max(1, (span[1] - span[0]) // 8)))
    parts = []
    for target in targets.tolist():
        rdp = bool(rng.random() < 0.5)
        n = 4 if rdp else 3
        times = t + np.cumsum(rng.integers(2_000, 40_000, size=n))
        dport = np.array([445, 135, int(rng.integers(49152, 65536)), 3389][:n])
        app = np.array([APP_INDEX["ms-ds-smb-base"], APP_INDEX["msrpc-base"], APP_INDEX["msrpc-base"],
                        APP_INDEX["ms-rdp"]][:n])  # fmt: skip
        sent = np.array([int(_lognormal(rng, 1.5e6, 0.8, 1)[0]), 1200, 4000, int(_lognormal(rng, 60_000, 0.6, 1)[0])])
        received = np.array([9000, 900, 2500, int(_lognormal(rng, 2e6, 0.6, 1)[0])])
        elapsed = np.array([int(rng.integers(2, 20)), 0, 1, int(rng.integers(600, 3600))])
        parts.append(
            _sessions(
                n,
                t=times,
                src=src,
                dst=target,
                sport=rng.integers(49152, 65536, size=n),
                dport=dport,
                app=app,
                proto=TCP,
                action=ALLOW,
                rule=np.where(dport == 3389, R_ADMIN, R_INTERNAL),
                end=FIN,
                sent=sent[:n],
                received=received[:n],
                pkts_sent=_packets(rng, sent[:n]),
                pkts_received=_packets(rng, received[:n], 1200.0),
                elapsed=elapsed[:n],
            )
        )
        t = int(times[-1]) + int(rng.integers(15, 41)) * 60_000
    return _concat(parts)


def _beacon_slow(rng: np.random.Generator, net: Network, src: int, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """C2 check-ins every 15-60 minutes with 20-50 % jitter; half the implants speak plain HTTP on port 443."""
    c2 = net.add_external(net.spare_internet.pop(), rng)
    period = int(rng.choice([900, 1800, 3600])) * 1000
    jitter = float(rng.uniform(0.2, 0.5))
    http = bool(rng.random() < 0.5)
    t = span[0] + int(rng.integers(0, period))
    times = []
    while t < span[1] or len(times) < 2:
        times.append(t)
        t += int(period * (1 + rng.uniform(-jitter, jitter)))
    n = len(times)
    sent = rng.normal(650, 40, size=n).astype(np.int64)
    received = (rng.normal(1900, 120, size=n) * np.where(rng.random(n) < 0.05, 15, 1)).astype(np.int64)
    return _sessions(
        n,
        t=np.array(times),
        src=src,
        dst=c2,
        sport=rng.integers(49152, 65536, size=n),
        dport=443,
        app=APP_INDEX["web-browsing" if http else "ssl"],
        proto=TCP,
        action=ALLOW,
        rule=R_WEB,
        end=FIN,
        sent=sent,
        received=received,
        pkts_sent=rng.integers(5, 9, size=n),
        pkts_received=rng.integers(4, 8, size=n),
        elapsed=rng.integers(0, 3, size=n),
    )


_MAKERS = {"dns_tunnel": _dns_tunnel, "portscan_slow": _portscan_slow, "lateral_slow": _lateral_slow,
           "beacon_slow": _beacon_slow}  # fmt: skip


def inject_attacks(
    net: Network, attacks: tuple[str, ...], seed: int, span: tuple[int, int]
) -> tuple[dict[str, np.ndarray], list[Label]]:
    """The sessions of each requested attack (its own compromised host each) and their labels."""
    rng = np.random.default_rng([seed, 2])
    people = net.host_ids[net.host_role != SERVER]
    sources = rng.choice(people, size=len(attacks), replace=len(attacks) > len(people))
    parts, labels = [], []
    for number, (attack, src) in enumerate(zip(attacks, sources.tolist(), strict=True)):
        if attack == "portscan":
            cols = _portscan(rng, net, src, span)
        elif attack == "beacon":
            cols = _beacon(rng, net, src, span)
        elif attack in ("exfil_fast", "exfil_slow"):
            cols = _exfil(rng, net, src, span, fast=attack == "exfil_fast")
        elif attack == "lateral":
            cols = _lateral(rng, net, src, span)
        else:
            cols = _MAKERS[attack](rng, net, src, span)
        cols["attack"][:] = ATTACK_CLASSES.index(attack)
        cols = _take(cols, np.flatnonzero((cols["t"] >= span[0]) & (cols["t"] < span[1])))
        parts.append(cols)
        attack_id = f"{attack}-{number + 1}"
        for dst in np.unique(cols["dst"]).tolist():
            mask = cols["dst"] == dst
            labels.append(
                Label(
                    attack_id=attack_id,
                    attack=attack,
                    src_ip=net.ips[src],
                    dst_ip=net.ips[dst],
                    dst_ports=sorted(set(cols["dport"][mask].tolist())),
                    start_ms=int(cols["t"][mask].min()),
                    end_ms=int(cols["t"][mask].max()),
                    sessions=int(mask.sum()),
                    bytes_sent=int(cols["sent"][mask].sum()),
                )
            )
    labels.sort(key=lambda lb: (lb.start_ms, lb.attack_id, lb.src_ip, lb.dst_ip))
    return _concat(parts), labels


# --- formatting --------------------------------------------------------------------------------------------


def _strings(values: list[str] | tuple[str, ...]) -> pa.Array:
    return pa.array(list(values), type=pa.string())


def _strftime(t_ms: np.ndarray, fmt: str) -> pa.Array:
    """Format whole seconds; each distinct second is formatted once (a batch has about 900 of them)."""
    seconds, inverse = np.unique(t_ms // 1000, return_inverse=True)
    formatted = pc.strftime(pa.array(seconds, type=pa.timestamp("s", tz="UTC")), format=fmt)
    return formatted.take(pa.array(inverse.reshape(-1)))


def _legacy(t_ms: np.ndarray) -> pa.Array:
    return _strftime(t_ms, "%Y/%m/%d %H:%M:%S")


def _high_res(t_ms: np.ndarray) -> pa.Array:
    """``2026-10-01T12:00:01.123+00:00``."""
    millis = pc.utf8_lpad(_num(t_ms % 1000), 3, "0")
    return pc.binary_join_element_wise(_strftime(t_ms, "%Y-%m-%dT%H:%M:%S"), ".", millis, "+00:00", "")


def _num(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def format_lines(cols: dict[str, np.ndarray], net: Network, rng: np.random.Generator, seq0: np.ndarray) -> pa.Array:
    """The log lines of sessions (columns sorted by time), one PAN-OS 11.x TRAFFIC row each.

    ``seq0`` is the per-device counter before this batch (session ids and sequence numbers continue it);
    it is advanced in place.
    """
    n = len(cols["t"])
    ips = _strings(net.ips)
    src_internal = net.zone[cols["src"]] != UNTRUST
    device = np.where(src_internal, net.device[cols["src"]], net.device[cols["dst"]])
    seq = np.empty(n, dtype=np.int64)
    for d in range(len(DEVICES)):
        mask = device == d
        seq[mask] = seq0[d] + 1 + np.arange(int(mask.sum()))
        seq0[d] += int(mask.sum())
    nat = src_internal & (net.zone[cols["dst"]] == UNTRUST)
    recv_ms = cols["t"] + rng.integers(0, 1500, size=n)
    zones = _strings(ZONES)
    apps = cols["app"]
    app_meta = {
        name: _strings([getattr(a, name) if name != "risk" else str(a.risk) for a in APPS])
        for name in ("name", "subcategory", "category", "technology", "risk", "url_category")
    }
    characteristics = _strings([f'"{a.characteristics}"' if "," in a.characteristics else a.characteristics
                                for a in APPS])
    serials = _strings([d.serial for d in DEVICES])
    names = _strings([d.name for d in DEVICES])
    action = cols["action"]
    total_bytes = cols["sent"] + cols["received"]
    generated = _legacy(cols["t"])
    fields: list[pa.Array | pa.Scalar] = [
        pa.scalar("1"),
        _legacy(recv_ms),
        serials.take(pa.array(device)),
        pa.scalar("TRAFFIC"),
        _strings(SUBTYPE_OF_ACTION).take(pa.array(action)),
        pa.scalar("2561"),
        generated,
        ips.take(pa.array(cols["src"])),
        ips.take(pa.array(cols["dst"])),
        pc.if_else(pa.array(nat), pa.scalar(FW_PUBLIC_IP), pa.scalar("0.0.0.0")),
        pa.scalar("0.0.0.0"),
        _strings(RULES).take(pa.array(cols["rule"])),
        _strings(net.user).take(pa.array(cols["src"])),
        pa.scalar(""),
        app_meta["name"].take(pa.array(apps)),
        pa.scalar("vsys1"),
        zones.take(pa.array(net.zone[cols["src"]])),
        zones.take(pa.array(net.zone[cols["dst"]])),
        pa.scalar("ethernet1/2,ethernet1/1,Forward-Syslog"),  # 18-20 interfaces, log action
        generated,  # 21
        _num(seq),  # 22 session id
        pa.scalar("1"),  # 23 repeat count
        _num(cols["sport"]),
        _num(cols["dport"]),
        _num(np.where(nat, rng.integers(1024, 65536, size=n), 0)),
        pa.scalar("0"),
        pc.if_else(pa.array(nat), pa.scalar("0x400053"), pa.scalar("0x400019")),
        _strings(PROTOCOLS).take(pa.array(cols["proto"])),
        _strings(ACTIONS).take(pa.array(action)),
        _num(total_bytes),
        _num(cols["sent"]),
        _num(cols["received"]),
        _num(cols["pkts_sent"] + cols["pkts_received"]),
        _legacy(cols["t"] - 1000 * cols["elapsed"]),
        _num(cols["elapsed"]),
        app_meta["url_category"].take(pa.array(apps)),
        pa.scalar("0"),  # 38
        _num(seq),  # 39 sequence number
        pa.scalar("0x8000000000000000"),
        _strings(net.location).take(pa.array(cols["src"])),
        _strings(net.location).take(pa.array(cols["dst"])),
        pa.scalar("0"),  # 43
        _num(cols["pkts_sent"]),
        _num(cols["pkts_received"]),
        _strings(END_REASONS).take(pa.array(cols["end"])),
        pa.scalar("0,0,0,0,"),  # 47-51 device group hierarchy, vsys name
        names.take(pa.array(device)),  # 52
        # 53-101: action source, UUIDs, tunnel, SCTP, rule UUID, SD-WAN, device-ID and container fields
        pa.scalar("from-policy,,,0,,0,,N/A,0,0,0,0,,0,0,0" + "," * 33),
        _high_res(cols["t"]),
        pa.scalar(","),  # 103-104
        app_meta["subcategory"].take(pa.array(apps)),
        app_meta["category"].take(pa.array(apps)),
        app_meta["technology"].take(pa.array(apps)),
        app_meta["risk"].take(pa.array(apps)),
        characteristics.take(pa.array(apps)),
        pa.scalar(",no,no,no,0"),  # 110-114 container, tunneled, SaaS, sanctioned, offloaded
    ]
    body = pc.binary_join_element_wise(*fields, ",")
    header = pc.binary_join_element_wise(
        "<14>", _strftime(recv_ms, "%b %e %H:%M:%S"), " ",
        names.take(pa.array(device)), " ", "",
    )  # fmt: skip
    with_header = pa.array([d.header for d in DEVICES]).take(pa.array(device))
    return pc.binary_join_element_wise(pc.if_else(with_header, header, ""), body, "")


NOISE_KINDS = ("too_few_fields", "not_traffic", "bad_number", "bad_timestamp")


def add_noise(lines: list[str], rng: np.random.Generator, rate: float, candidates: np.ndarray) -> dict[str, int]:
    """Damage a fraction of the (background) lines in place, one kind each; returns the counts per kind."""
    counts = dict.fromkeys(NOISE_KINDS, 0)
    k = int(rng.binomial(len(candidates), rate)) if len(candidates) else 0
    for i, row in enumerate(sorted(rng.choice(candidates, size=k, replace=False).tolist()) if k else []):
        kind = NOISE_KINDS[i % len(NOISE_KINDS)]
        line = lines[row]
        prefix, sep, rest = line.partition(",")
        csv = rest.split(",")
        if kind == "too_few_fields":
            lines[row] = prefix + sep + ",".join(csv[:30])
        elif kind == "not_traffic":
            lines[row] = prefix + sep + ",".join([*csv[:2], "THREAT", *csv[3:]])
        elif kind == "bad_number":
            lines[row] = prefix + sep + ",".join([*csv[:31], "12x", *csv[32:]])
        else:
            lines[row] = prefix + sep + ",".join([*csv[:5], "2026/13/45 99:00:00", *csv[6:]])
        counts[kind] += 1
    return counts


def _encode(lines: pa.Array) -> bytes:
    """Lines joined with newlines (each line ends with one), straight from the Arrow buffers."""
    if len(lines) == 0:
        return b""
    with_nl = pc.binary_join_element_wise(lines, "", "\n")
    _, offsets_buffer, data = with_nl.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[with_nl.offset : with_nl.offset + len(with_nl) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    return data.slice(start, end - start).to_pybytes()


# --- the whole run -----------------------------------------------------------------------------------------


def batch_folder(root: str, config: SynthConfig, batch_start: datetime) -> str:
    """The raw mini-batch folder of a batch, as the ingestion contract lays it out."""
    return storage.join(
        root,
        "pan-traffic",
        config.org_id,
        config.project_name,
        config.feature_spec_version,
        batch_start.strftime("%Y/%m/%d/%H%M"),
    )


def _floor_batch(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def generate(config: SynthConfig, out: str, labels_path: str | None = None) -> SynthResult:
    """Write the raw batches and the labels under ``out``; see ``docs/design/jobs.md`` (Devtools)."""
    began = time.perf_counter()
    start = _floor_batch(config.start)
    n_batches = max(1, int(np.ceil(config.hours * 4 - 1e-9)))
    span = (int(start.timestamp() * 1000), int(start.timestamp() * 1000) + n_batches * BATCH_MS)
    net = build_network(config.hosts, config.seed, config.estate)
    attack_cols, labels = inject_attacks(net, config.attacks, config.seed, span)
    attack_order = np.argsort(attack_cols["t"], kind="stable")
    attack_cols = _take(attack_cols, attack_order)
    labels_path = labels_path or storage.join(out, "labels.jsonl")
    result = SynthResult(raw_prefix=storage.join(out, "pan-traffic", config.org_id, config.project_name,
                                                  config.feature_spec_version), labels_path=labels_path)  # fmt: skip
    result.attack_rows = {a: int((attack_cols["attack"] == ATTACK_CLASSES.index(a)).sum()) for a in config.attacks}
    result.noise_rows = dict.fromkeys(NOISE_KINDS, 0)
    seq = np.array([1_000_000 * (i + 1) for i in range(len(DEVICES))], dtype=np.int64)
    for b in range(n_batches):
        b0 = span[0] + b * BATCH_MS
        rng = np.random.default_rng([config.seed, 4, b0 // BATCH_MS])
        lo, hi = np.searchsorted(attack_cols["t"], [b0, b0 + BATCH_MS])
        cols = _concat([background(net, config.seed, b0, config.rate_scale), _take(attack_cols, np.arange(lo, hi))])
        cols = _take(cols, np.lexsort((cols["src"], cols["t"])))
        lines = format_lines(cols, net, rng, seq)
        if config.noise_rate > 0:
            text = lines.to_pylist()
            counts = add_noise(text, rng, config.noise_rate, np.flatnonzero(cols["attack"] == NO_ATTACK))
            for kind, count in counts.items():
                result.noise_rows[kind] += count
            lines = pa.array(text, type=pa.string())
        folder = batch_folder(out, config, datetime.fromtimestamp(b0 / 1000, UTC))
        bounds = np.linspace(0, len(lines), config.files_per_batch + 1).astype(int)
        for i in range(config.files_per_batch):
            data = _encode(lines.slice(bounds[i], bounds[i + 1] - bounds[i]))
            name = f"traffic-{datetime.fromtimestamp(b0 / 1000, UTC):%Y%m%dT%H%M}-{i:02d}.log"
            if config.gzip:
                data, name = gzip.compress(data, compresslevel=5, mtime=0), name + ".gz"
            storage.write_bytes(storage.join(folder, name), data)
            result.files += 1
        result.rows += len(lines)
        result.batches += 1
    storage.write_text(labels_path, "".join(json.dumps(lb.as_json(), sort_keys=True) + "\n" for lb in labels))
    result.labels = len(labels)
    result.seconds = time.perf_counter() - began
    return result
