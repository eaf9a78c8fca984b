"""The feature spec (``specs/features/<version>.yaml``): what FG-A, FG-B and FG-C compute, and the model's parameters.

A FeatureSpec document::

    apiVersion: ndr/v1
    kind: FeatureSpec
    metadata: {name: v1, description: ...}
    spec:
      network: {internal_networks, segments, admin_ports}
      fg_a: {windows, features, rarity, periodicity}
      fg_b: {horizons, windows, statistics, min_windows}
      fg_c: {baseline_horizon, zscore, novelty, features}
      isolation_forest: {n_estimators, max_samples, contamination, random_state, validation_fraction,
                         exclude_features, families, calibration_tail}

The jobs implement fixed catalogues of computable features (:data:`FG_A_CATALOGUE`, :data:`FG_C_CATALOGUE`);
the spec selects which are computed and over which windows, and an unknown name is an error at load time.
FG-A's columns are ``<feature>_<window>``; FG-B's ``<feature>_<window>_<statistic>``; FG-C's z-scores
``z_host_<feature>_<window>`` and ``z_segment_<feature>_<window>`` plus its own selected features.

This module must not import pyspark: the compiler imports it to lint FeatureSpec documents.
"""

import ipaddress
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FEATURE_SPEC_DIR_ENV = "NDR_FEATURE_SPEC_DIR"
SLICE = timedelta(minutes=15)

#: FG-A features the job can compute (per internal source host, per window ending at the batch end)
FG_A_CATALOGUE: dict[str, str] = {
    "sessions": "sessions started by the host",
    "fan_out": "distinct destination addresses",
    "distinct_dst_ports": "distinct destination ports",
    "internal_fan_out": "distinct internal destination addresses",
    "external_fan_out": "distinct external destination addresses",
    "admin_port_fan_out": "distinct internal destinations contacted on an admin port (SMB, RPC, RDP, WinRM)",
    "bytes_out_log": "ln(1 + bytes sent)",
    "bytes_in_log": "ln(1 + bytes received)",
    "out_in_ratio": "bytes sent / (bytes sent + bytes received), 0 without bytes",
    "max_dst_bytes_out_log": "ln(1 + the largest bytes sent to one destination)",
    "external_bytes_out_log": "ln(1 + bytes sent to external destinations)",
    "deny_ratio": "denied (not allowed) sessions / sessions",
    "rare_port_sessions": "sessions to a destination port few internal hosts used in the rarity reference window",
    "rare_app_sessions": "sessions of an application few internal hosts used in the rarity reference window",
    "internal_internal_sessions": "sessions from this internal host to an internal destination",
    "periodic_max_score": "strongest periodicity score of an external (host, destination) series",
    "periodic_top_fill": "active-slice fraction of the strongest periodic external series",
    "periodic_top_cv": "coefficient of variation of per-slice sessions of the strongest periodic external series",
    "periodic_pairs": "external destinations whose periodicity score reaches the threshold",
    # protocol- and service-aware (fg_a.protocol); the attack each one exposes is in docs/datasets.md
    "dns_sessions": "DNS sessions (a DNS port or application)",
    "offnet_dns_sessions": "DNS sessions to a destination that is not an estate resolver (DNS tunnelling)",
    "offnet_dns_share": "offnet DNS sessions / DNS sessions, 0 without DNS (DNS tunnelling)",
    "app_port_mismatch_sessions": "sessions whose application is not on one of its usual ports (C2 on a borrowed port)",
    "small_flow_burst": "most allowed small sessions to one external destination (tunnels, chatty C2)",
}
#: FG-C features (besides the z-scores) the job can compute, per host in the batch
FG_C_CATALOGUE: dict[str, str] = {
    "pairs": "(destination, port) pairs of the host in the batch",
    "novel_pairs": "pairs not in the host's pair baseline",
    "novel_pair_fraction": "novel pairs / pairs",
    "novel_pair_bytes_out_log": "ln(1 + bytes sent on novel pairs)",
    "novel_dsts": "destinations the host never contacted in the baseline",
    "novel_external_dsts": "external destinations the host never contacted in the baseline",
    "novel_dst_bytes_out_log": "ln(1 + bytes sent to novel destinations)",
    "segment_novel_pairs": "pairs no host of the segment used in the baseline",
    "max_dst_rarity": "max over external destinations of 1 / (1 + prevalence)",
    "min_dst_prevalence_log": "ln(1 + the smallest prevalence of an external destination contacted)",
    "low_prevalence_dsts": "external destinations with prevalence at or below the threshold",
    "low_prevalence_bytes_out_log": "ln(1 + bytes sent to low-prevalence external destinations)",
    "rare_dst_periodic_score": "strongest periodicity score of a series to a novel or low-prevalence external dst",
    "rare_dst_active_fraction": "active-slice fraction of that series over the periodicity window",
    "rare_dst_beacon_score": "most regular minute-level series to a novel or low-prevalence external dst",
    "rare_dst_active_minutes": "active minutes of that series over the beacon window",
    "bytes_out_vs_host_p99": "ln(1 + bytes sent) - ln(1 + the host's baseline p99 of bytes sent), 15m",
    # service-aware, against the FG-B pair baselines (the attack each one exposes is in docs/datasets.md)
    "novel_port_sessions": "sessions on destination ports the host never used in the baseline",
    "novel_port_fan_out": "destinations contacted on ports the host never used in the baseline",
    "segment_novel_ports": "destination ports no host of the segment used in the baseline",
    "segment_novel_port_fan_out": "destinations contacted on ports no host of the segment used in the baseline",
    "rare_dns_dst_sessions": "DNS-port sessions to destinations at or below the low-prevalence threshold",
}
#: the ensemble member that sees every model column (a reserved family name)
ALL_FEATURES = "all_features"
FG_B_STATISTICS = ("mean", "std", "median", "p90", "p99", "mad")
#: FG-C's cold-start flags (always written)
FG_C_FLAGS = ("host_baseline_missing", "segment_baseline_missing", "pair_baseline_missing", "ip_baseline_missing")

_DURATION = re.compile(r"^([1-9][0-9]*)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: str) -> timedelta:
    """``15m``, ``1h``, ``24h``, ``7d`` as a timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration like 15m, 1h, 7d: {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """``fnmatchcase(name, pattern)`` as a predicate of ``name``; a plain name and ``prefix*`` (the usual
    feature patterns) without compiling a regex: the lint validates every feature spec on start-up."""
    head, star, tail = pattern.partition("*")
    if not any(ch in head for ch in "?["):
        if not star:
            return pattern.__eq__
        if not tail:
            return lambda name: name.startswith(head)
    from fnmatch import translate

    match = re.compile(translate(pattern)).match
    return lambda name: match(name) is not None


def slices(value: str) -> int:
    """How many 15-minute slices a window (a multiple of 15 minutes) spans."""
    return int(parse_duration(value) / SLICE)


def _window(value: str) -> str:
    duration = parse_duration(value)
    if duration % SLICE or duration < SLICE:
        raise ValueError(f"window {value!r} is not a positive multiple of 15 minutes")
    return value


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a CIDR network: {value!r} ({exc})") from None
    if net.version != 4:
        raise ValueError(f"only IPv4 networks are supported: {value!r}")
    return value


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(Strict):
    cidr: str
    segment: Name

    @field_validator("cidr")
    @classmethod
    def _check(cls, value: str) -> str:
        return _cidr(value)


class Network(Strict):
    """Which addresses are internal, the CIDR -> segment map (when there is no inventory), admin ports."""

    internal_networks: list[str] = Field(default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    segments: list[Segment] = Field(default_factory=list)
    admin_ports: list[Annotated[int, Field(ge=0, le=65535)]] = Field(default_factory=lambda: [135, 139, 445, 3389])
    #: resolvers the estate uses whether or not enough hosts queried them lately (IPv4 addresses)
    dns_resolvers: list[str] = Field(default_factory=list)

    @field_validator("internal_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one internal network is needed")
        return [_cidr(v) for v in value]

    @field_validator("dns_resolvers")
    @classmethod
    def _resolvers(cls, value: list[str]) -> list[str]:
        for v in value:
            try:
                address = ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"not an IP address: {v!r}") from None
            if address.version != 4 or str(address) != v:
                raise ValueError(f"dns_resolvers takes IPv4 addresses in dotted-quad form: {v!r}")
        return value


class FgAFeature(Strict):
    name: Name
    description: str = ""
    windows: list[str] = Field(min_length=1)


class Rarity(Strict):
    """A port/app is rare when at most ``max(min_hosts, host_fraction x active hosts)`` internal hosts used it."""

    reference_window: str | None = None  # default: the longest FG-A window
    port_max_hosts: Annotated[int, Field(ge=1)] = 2
    app_max_hosts: Annotated[int, Field(ge=1)] = 2
    host_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0


class Periodicity(Strict):
    """A (host, destination) series is scored when it was active in at least ``min_active_slices`` slices."""

    min_active_slices: Annotated[int, Field(ge=2)] = 4
    score_threshold: Annotated[float, Field(gt=0, le=1)] = 0.6


AppName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._+-]*$", max_length=64)]
Port = Annotated[int, Field(ge=0, le=65535)]


class Protocol(Strict):
    """What the protocol-aware FG-A features call DNS, an estate resolver, a small flow and an app's ports.

    A DNS destination is an estate resolver when it is listed in ``network.dns_resolvers`` or when at least
    ``min(max(resolver_min_hosts, resolver_host_fraction x hosts), max(2, ceil(dns_hosts / 2)))`` internal
    hosts queried it over the rarity reference window (``hosts``: internal hosts active in it; ``dns_hosts``:
    those with DNS); an application of ``app_ports`` on another port is a mismatch (applications not listed
    never are).
    """

    dns_ports: list[Port] = Field(default_factory=lambda: [53])
    dns_apps: list[AppName] = Field(default_factory=lambda: ["dns", "dns-base"])
    resolver_min_hosts: Annotated[int, Field(ge=2)] = 3
    resolver_host_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    small_flow_max_bytes: Annotated[int, Field(ge=1)] = 600
    app_ports: dict[AppName, list[Port]] = Field(default_factory=dict)

    @field_validator("app_ports")
    @classmethod
    def _app_ports(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        empty = sorted(app for app, ports in value.items() if not ports)
        if empty:
            raise ValueError(f"app_ports {empty} list no port")
        return value


class FgA(Strict):
    windows: list[str] = Field(min_length=1)
    features: list[FgAFeature] = Field(min_length=1)
    rarity: Rarity = Rarity()
    periodicity: Periodicity = Periodicity()
    protocol: Protocol = Protocol()

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        value = [_window(v) for v in value]
        if len(set(value)) != len(value):
            raise ValueError("duplicate window")
        if "15m" not in value:
            raise ValueError("the 15m window (the batch itself) is required")
        return sorted(value, key=parse_duration)

    @model_validator(mode="after")
    def _features(self) -> Self:
        names = [f.name for f in self.features]
        unknown = sorted(set(names) - set(FG_A_CATALOGUE))
        if unknown:
            raise ValueError(f"unknown FG-A features {unknown}; known: {', '.join(sorted(FG_A_CATALOGUE))}")
        if len(set(names)) != len(names):
            raise ValueError("duplicate FG-A feature")
        for f in self.features:
            bad = sorted(set(f.windows) - set(self.windows))
            if bad:
                raise ValueError(f"feature {f.name!r} uses windows {bad} not declared in fg_a.windows")
        if self.rarity.reference_window is not None and self.rarity.reference_window not in self.windows:
            raise ValueError(f"rarity.reference_window {self.rarity.reference_window!r} is not in fg_a.windows")
        return self

    def columns(self) -> list[str]:
        """``<feature>_<window>`` for every feature and window, features in spec order, windows shortest first."""
        return [f"{f.name}_{w}" for f in self.features for w in self.windows if w in f.windows]

    @property
    def max_window(self) -> str:
        return self.windows[-1]

    @property
    def rarity_window(self) -> str:
        return self.rarity.reference_window or self.max_window


class FgB(Strict):
    horizons: list[str] = Field(min_length=1)
    windows: list[str] = Field(default_factory=lambda: ["15m"])
    statistics: list[Literal["mean", "std", "median", "p90", "p99", "mad"]] = Field(
        default_factory=lambda: list(FG_B_STATISTICS)
    )
    min_windows: Annotated[int, Field(ge=1)] = 8

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, value: list[str]) -> list[str]:
        for v in value:
            if parse_duration(v) < timedelta(days=1) or parse_duration(v) % timedelta(days=1):
                raise ValueError(f"horizon {v!r} is not a whole number of days")
        if len(set(value)) != len(value):
            raise ValueError("duplicate horizon")
        return value


class ZScore(Strict):
    windows: list[str] = Field(default_factory=lambda: ["15m"])
    features: list[Name] = Field(default_factory=list)  # empty: every FG-A feature with those windows
    #: the baselines each z-scored column is compared with: ``z_host_*`` and/or ``z_segment_*`` columns
    baselines: Annotated[list[Literal["host", "segment"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["host", "segment"]
    )
    min_scale: Annotated[float, Field(gt=0)] = 1.0
    clip: Annotated[float, Field(gt=0)] = 20.0


class Novelty(Strict):
    low_prevalence_max_hosts: Annotated[int, Field(ge=0)] = 2
    periodicity_window: str = "24h"
    #: minute-level beacon features: the window (at most 1h: one 64-bit minute mask) and the fewest
    #: active minutes a series needs to score
    beacon_window: str = "1h"
    beacon_min_active_minutes: Annotated[int, Field(ge=2)] = 4

    @field_validator("beacon_window")
    @classmethod
    def _beacon_window(cls, value: str) -> str:
        window = parse_duration(value)
        if window % SLICE or not SLICE <= window <= timedelta(hours=1):
            raise ValueError(f"beacon_window {value!r} must be 15m, 30m, 45m or 1h (whole 15-minute slices)")
        return value


class FgC(Strict):
    baseline_horizon: str
    zscore: ZScore = ZScore()
    novelty: Novelty = Novelty()
    features: list[Name] = Field(default_factory=lambda: list(FG_C_CATALOGUE))

    @field_validator("features")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(FG_C_CATALOGUE))
        if unknown:
            raise ValueError(f"unknown FG-C features {unknown}; known: {', '.join(sorted(FG_C_CATALOGUE))}")
        return value


class IsolationForestParams(Strict):
    """Hyper-parameters of the Isolation Forest the training job fits."""

    n_estimators: Annotated[int, Field(ge=1)] = 200
    max_samples: int | float | Literal["auto"] = "auto"
    contamination: float | Literal["auto"] = "auto"
    random_state: int = 0
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    #: model columns the forest does not see (``fnmatch`` patterns over the FG-A/FG-C column names, FG-C
    #: columns named as in the model: ``fg_c__<name>`` when FG-A has the name too); each must match one
    exclude_features: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    #: behaviour families, ``{name: [patterns]}`` (patterns as in ``exclude_features``): besides the forest on
    #: every model column (``all_features``), one forest per family on the columns its patterns match; a row's
    #: score is its most surprising forest's, each forest calibrated on its own training scores
    families: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], list[Annotated[str, Field(min_length=1)]]] = (
        Field(default_factory=dict)
    )
    #: share of the training scores whose upper tail the calibration models as exponential
    calibration_tail: Annotated[float, Field(gt=0, le=0.5)] = 0.05

    @field_validator("families")
    @classmethod
    def _families(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if ALL_FEATURES in value:
            raise ValueError(f"family name {ALL_FEATURES!r} is reserved for the forest on every column")
        empty = sorted(name for name, patterns in value.items() if not patterns)
        if empty:
            raise ValueError(f"families {empty} have no patterns")
        return value


class FeatureSpecBody(Strict):
    """The ``spec:`` mapping of a FeatureSpec document."""

    network: Network = Network()
    fg_a: FgA
    fg_b: FgB
    fg_c: FgC
    isolation_forest: IsolationForestParams = IsolationForestParams()

    @model_validator(mode="after")
    def _cross(self) -> Self:
        bad = sorted(set(self.fg_b.windows) - set(self.fg_a.windows))
        if bad:
            raise ValueError(f"fg_b.windows {bad} are not FG-A windows")
        if self.fg_c.baseline_horizon not in self.fg_b.horizons:
            raise ValueError(f"fg_c.baseline_horizon {self.fg_c.baseline_horizon!r} is not one of fg_b.horizons")
        if not {"median", "mad"} <= set(self.fg_b.statistics):
            raise ValueError("fg_b.statistics must include median and mad (FG-C's robust z-scores)")
        bad = sorted(set(self.fg_c.zscore.windows) - set(self.fg_b.windows))
        if bad:
            raise ValueError(f"fg_c.zscore.windows {bad} have no FG-B baseline (fg_b.windows)")
        names = {f.name for f in self.fg_a.features}
        bad = sorted(set(self.fg_c.zscore.features) - names)
        if bad:
            raise ValueError(f"fg_c.zscore.features {bad} are not FG-A features of this spec")
        if self.fg_c.novelty.periodicity_window not in self.fg_a.windows:
            raise ValueError(f"fg_c.novelty.periodicity_window {self.fg_c.novelty.periodicity_window!r} "
                             "is not in fg_a.windows")  # fmt: skip
        columns = self.model_columns()
        exclude = [(p, glob_matcher(p)) for p in self.isolation_forest.exclude_features]
        bad = [p for p, match in exclude if not any(map(match, columns))]
        if bad:
            raise ValueError(f"isolation_forest.exclude_features {bad} match no FG-A or FG-C column of this spec")
        seen = [c for c in columns if not any(match(c) for _, match in exclude)]
        for name, patterns in self.isolation_forest.families.items():
            bad = [p for p in patterns if not any(map(glob_matcher(p), seen))]
            if bad:
                raise ValueError(f"isolation_forest.families.{name} patterns {bad} match no model column "
                                 "(FG-A or FG-C, not excluded)")  # fmt: skip
        return self

    def model_columns(self) -> list[str]:
        """Every feature column FG-A and FG-C write, as the model names them (``fg_c__`` for a shared name)."""
        fg_a = self.fg_a.columns()
        baselines = [b for b in ("host", "segment") if b in self.fg_c.zscore.baselines]
        z = [f"z_{b}_{c}" for b in baselines for c in self.zscore_columns()]
        fg_c = [*z, *self.fg_c.features, *FG_C_FLAGS]
        return [*fg_a, *(f"fg_c__{c}" if c in fg_a else c for c in fg_c)]

    def baseline_columns(self) -> list[str]:
        """The FG-A columns FG-B summarises (``<feature>_<window>`` for the FG-B windows)."""
        return [c for c in self.fg_a.columns() if c.rsplit("_", 1)[1] in self.fg_b.windows]

    def zscore_columns(self) -> list[str]:
        """The FG-A columns FG-C turns into z-scores."""
        wanted = set(self.fg_c.zscore.features) or {f.name for f in self.fg_a.features}
        return [
            c for c in self.baseline_columns()
            if c.rsplit("_", 1)[1] in self.fg_c.zscore.windows and c.rsplit("_", 1)[0] in wanted
        ]  # fmt: skip


class FeatureSpecMetadata(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""


class FeatureSpecDocument(Strict):
    apiVersion: Literal["ndr/v1"]  # noqa: N815 - the document's key
    kind: Literal["FeatureSpec"]
    metadata: FeatureSpecMetadata
    spec: FeatureSpecBody


def feature_spec_dir() -> Path:
    """``$NDR_FEATURE_SPEC_DIR``, or the repository's ``specs/features``."""
    configured = os.environ.get(FEATURE_SPEC_DIR_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "specs" / "features"


def load_feature_spec(version: str) -> FeatureSpecBody:
    """The ``spec:`` of ``<dir>/<version>.yaml``; ValueError for an unknown version or an invalid file."""
    directory = feature_spec_dir()
    known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", version) or version not in known:
        raise ValueError(
            f"unknown feature spec version {version!r}: no {version}.yaml in {directory} "
            f"(known: {', '.join(known) or 'none'})"
        )
    path = directory / f"{version}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid feature spec {path}: not YAML: {exc}") from None
    try:
        document = FeatureSpecDocument.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<document>'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid feature spec {path}: {problems}") from None
    if document.metadata.name != version:
        raise ValueError(f"invalid feature spec {path}: metadata.name {document.metadata.name!r} != {version!r}")
    return document.spec
