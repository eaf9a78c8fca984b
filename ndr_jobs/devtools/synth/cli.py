"""``python -m ndr_jobs.devtools.synth.cli``: write synthetic PAN-OS TRAFFIC mini-batches and attack labels.

Example::

    python -m ndr_jobs.devtools.synth.cli --out /tmp/raw --start 2026-10-01T00:00:00Z --hours 2 --hosts 50 --seed 7 \\
        --attacks portscan,beacon,exfil_fast,exfil_slow,lateral

prints a JSON summary (rows, files, attack rows, labels) on stdout. ``--out`` is the raw root (a local
directory or ``s3://bucket``): the delta builder finds the batches there with ``NDR_RAW_ROOT=<out>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from ndr_jobs.devtools.synth.generator import ATTACK_CLASSES, ESTATES, SynthConfig, generate
from ndr_jobs.interface.contract import window_start


def _attacks(value: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = sorted(set(names) - set(ATTACK_CLASSES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown attack classes {unknown}; choose from {','.join(ATTACK_CLASSES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.devtools.synth.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="raw root: local directory or s3://bucket[/prefix]")
    parser.add_argument("--start", required=True, type=window_start, help="ISO-8601 UTC start (15-minute aligned)")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--attacks", type=_attacks, default=(), help=f"comma-separated: {','.join(ATTACK_CLASSES)}")
    parser.add_argument("--org-id", default="acme")
    parser.add_argument("--project-name", default="ndr-prod")
    parser.add_argument("--feature-spec-version", default="v1")
    parser.add_argument("--files-per-batch", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="write .log.gz files")
    parser.add_argument("--noise-rate", type=float, default=0.0, help="fraction of lines damaged (quarantine tests)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every traffic rate")
    parser.add_argument("--estate", choices=ESTATES, default="flat", help="the network's shape")
    parser.add_argument("--labels", default=None, help="labels file (default <out>/labels.jsonl)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and print the summary; exit code 0, or 2 for bad arguments."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        config = SynthConfig(
            start=datetime.fromisoformat(a.start.replace("Z", "+00:00")),
            hours=a.hours,
            hosts=a.hosts,
            seed=a.seed,
            attacks=a.attacks,
            org_id=a.org_id,
            project_name=a.project_name,
            feature_spec_version=a.feature_spec_version,
            files_per_batch=a.files_per_batch,
            gzip=a.gzip,
            noise_rate=a.noise_rate,
            rate_scale=a.rate_scale,
            estate=a.estate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    result = generate(config, a.out, a.labels)
    print(json.dumps(result.as_dict(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
