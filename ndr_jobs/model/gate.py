"""The deployment gate: may a newly trained model replace the promoted one?

Every check must pass; drift checks compare raw ``all_features`` scores with the promoted model's. Limits
default to :class:`GatePolicy` and can be set through ``NDR_GATE_<NAME>`` (``NDR_GATE_MAX_PSI=0.1``). The checks
and their reasons: ``docs/design/jobs.md`` (Model).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from ndr_jobs.model import forest


@dataclass(frozen=True)
class GatePolicy:
    min_validation_rows: int = 20
    min_score_std: float = 1e-6
    max_alert_rate_ratio: float = 5.0
    max_psi: float = 0.25
    max_ks: float = 0.2

    @classmethod
    def from_env(cls) -> GatePolicy:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"NDR_GATE_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = int(raw) if f.type == "int" else float(raw)
                except ValueError:
                    raise ValueError(f"NDR_GATE_{f.name.upper()}={raw!r} is not a number") from None
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, value: float, limit: float, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "value": value, "limit": limit, "passed": bool(passed), "detail": detail}


def evaluate(
    metrics: dict[str, Any], promoted_metrics: dict[str, Any] | None, policy: GatePolicy
) -> list[dict[str, Any]]:
    """The gate's checks of a model's metrics (``train/metrics.json``) against the promoted model's."""
    validation = metrics["validation"]
    scores = validation["scores"]
    contamination = float(metrics["params"]["nominal_contamination"])
    max_rate = policy.max_alert_rate_ratio * contamination
    checks = [
        _check("validation_rows", scores["count"], policy.min_validation_rows,
               scores["count"] >= policy.min_validation_rows, "rows in the validation split (at least)"),
        _check("validation_score_spread", scores["std"], policy.min_score_std, scores["std"] > policy.min_score_std,
               "standard deviation of the validation scores (above)"),
        _check("validation_alert_rate", validation["alert_rate"], max_rate, validation["alert_rate"] <= max_rate,
               "share of validation rows at or above the alert threshold (at most)"),
    ]  # fmt: skip
    if promoted_metrics is not None:
        # a model of bundle format 1 has no forest_scores; it cannot score any more, so nothing to keep it for
        reference = promoted_metrics["validation"].get("forest_scores", {}).get("percentiles")
        current = validation["forest_scores"]["percentiles"]
        if reference and current:
            p, k = forest.psi(reference, current), forest.ks(reference, current)
            against = "of the validation scores against the promoted model's (at most)"
            checks.append(_check("score_psi", p, policy.max_psi, p <= policy.max_psi, f"PSI {against}"))
            checks.append(_check("score_ks", k, policy.max_ks, k <= policy.max_ks, f"KS distance {against}"))
    return checks
