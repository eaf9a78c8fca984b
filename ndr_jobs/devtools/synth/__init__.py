"""Synthetic PAN-OS TRAFFIC logs with labelled attacks, in the raw mini-batch layout of the contracts.

``python -m ndr_jobs.devtools.synth.cli --out DIR --start 2026-10-01T00:00:00Z --hours 2 --hosts 50 --seed 7``
writes ``DIR/pan-traffic/<org_id>/<project_name>/<feature_spec_version>/YYYY/MM/DD/HHMM/*.log`` and
``DIR/labels.jsonl``; see :mod:`ndr_jobs.devtools.synth.generator`.
"""

from ndr_jobs.devtools.synth.generator import ATTACK_CLASSES, SynthConfig, SynthResult, generate

__all__ = ["ATTACK_CLASSES", "SynthConfig", "SynthResult", "generate"]
