"""The operator's janitor: sweep, check and migrate every partition under a storage prefix.

Writes keep datasets clean on their own (each write settles the dataset's journal, ``docs/datasets.md``). This
command is for what writes cannot see: partitions written before the journal existed, partitions in the
old layout (Parquet files directly in the partition directory, no manifest, invisible to readers), and an
audit of the committed files against their manifests' sizes and SHA-256::

    python -m ndr_jobs.datasets.janitor s3://bucket/ndr [--adopt-legacy] [--verify] [--grace SECONDS]

Exit status: 0 clean, 1 when ``--verify`` found a file that is not what its manifest says, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field

from ndr_jobs.datasets import storage


@dataclass
class Report:
    """What one janitor pass found and did (counts, and the problems by partition)."""

    partitions: int = 0
    runs_removed: int = 0
    journal_swept: int = 0
    legacy_adopted: list[str] = field(default_factory=list)
    legacy_left: list[str] = field(default_factory=list)
    unreadable_manifests: list[str] = field(default_factory=list)
    verify_failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "partitions": self.partitions, "runs_removed": self.runs_removed, "journal_swept": self.journal_swept,
            "legacy_adopted": self.legacy_adopted, "legacy_left": self.legacy_left,
            "unreadable_manifests": self.unreadable_manifests, "verify_failures": self.verify_failures,
        }  # fmt: skip


@dataclass
class _Found:
    partitions: set[str] = field(default_factory=set)  # directories with a manifest or run prefixes
    legacy: dict[str, list[str]] = field(default_factory=dict)  # directory -> its loose Parquet files
    journals: set[str] = field(default_factory=set)  # dataset paths with a journal


def _loose_parquet(parts: list[str]) -> bool:
    return parts[-1].endswith(".parquet") and not any(p.startswith(("_", ".")) for p in parts)


def _scan(base: str) -> _Found:
    """One listing of ``base``, sorted into partitions, old-layout partitions and dataset journals."""
    found = _Found()
    base = base.rstrip("/")
    for obj in storage.list_objects(base, include_hidden=True):
        parts = obj.path[len(base) :].strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            if part == storage.RUNS_DIR and i > 0:
                found.partitions.add(storage.join(base, *parts[:i]))
                break
            if part == storage.JOURNAL_DIR and i > 0:
                found.journals.add(storage.join(base, *parts[:i]))
                break
        else:
            directory = storage.join(base, *parts[:-1]) if len(parts) > 1 else base
            if parts[-1] == storage.MANIFEST:
                found.partitions.add(directory)
            elif _loose_parquet(parts) and "=" in directory.rsplit("/", 1)[-1]:
                found.legacy.setdefault(directory, []).append(obj.path)
    for directory in list(found.legacy):
        if directory in found.partitions and storage.committed_files(directory) is not None:
            # loose files beside a manifest: not the partition (readers follow the manifest), left for a human
            found.legacy[directory] = []
    return found


def _split_partition(directory: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``<root>/<dataset>/<k>=<v>/...`` -> (root, dataset, [(k, v), ...]): the trailing ``k=v`` segments."""
    segments = directory.rstrip("/").split("/")
    keys: list[tuple[str, str]] = []
    while segments and "=" in segments[-1]:
        key, _, value = segments.pop().partition("=")
        keys.insert(0, (key, value))
    if len(segments) < 2 or not keys:
        raise ValueError(f"{directory}: not <root>/<dataset>/<key>=<value>/...")
    return "/".join(segments[:-1]), segments[-1], keys


def adopt_legacy(directory: str, files: list[str]) -> storage.PartitionWrite:
    """Commit an old-layout partition's loose Parquet files through the protocol, then delete them."""
    root, dataset, keys = _split_partition(directory)

    def put(prefix: str) -> None:
        for i, source in enumerate(sorted(files)):
            storage.write_bytes(storage.join(prefix, f"part-{i:05d}.parquet"), storage.read_bytes(source))

    written = storage.commit_partition(root, dataset, keys, put)
    for source in files:
        storage.delete_file(source)
    return written


def verify(directory: str) -> list[str]:
    """The committed files of a partition that are missing or differ from their manifest's size or SHA-256."""
    manifest = storage.read_manifest(directory)
    if manifest is None:
        return []
    problems = []
    for entry in manifest.files:
        path = storage.join(directory, manifest.prefix, entry.name)
        data = storage.read_if_exists(path)
        if data is None:
            problems.append(f"{path}: missing")
        elif len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            problems.append(f"{path}: {len(data)} bytes and a SHA-256 other than the manifest's")
    return problems


def run(base: str, grace: float | None = None, adopt: bool = False, check: bool = False) -> Report:
    """One pass over everything under ``base`` (see the module docstring)."""
    report = Report()
    found = _scan(base)
    for dataset in sorted(found.journals):
        parent, _, name = dataset.rpartition("/")
        report.journal_swept += len(storage.sweep_journal(parent, name, grace, limit=None))
    for directory, files in sorted(found.legacy.items()):
        if not files:
            continue
        if adopt:
            adopt_legacy(directory, files)
            report.legacy_adopted.append(directory)
            found.partitions.add(directory)
        else:
            report.legacy_left.append(directory)
    for directory in sorted(found.partitions):
        report.partitions += 1
        try:
            storage.read_manifest(directory)
        except storage.ManifestError:
            report.unreadable_manifests.append(directory)
            continue
        report.runs_removed += len(storage.sweep_partition(directory, grace))
        if check:
            report.verify_failures.extend(verify(directory))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndr_jobs.datasets.janitor", description=__doc__.split("\n")[0])
    parser.add_argument("base", help="a storage prefix: a project's root (s3://bucket/prefix or a directory)")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help=f"seconds superseded runs are kept (default ${storage.GRACE_ENV} or 6 hours)",
    )
    parser.add_argument(
        "--adopt-legacy",
        action="store_true",
        help="commit old-layout partitions (loose Parquet files, no manifest) through the protocol",
    )
    parser.add_argument("--verify", action="store_true", help="check every committed file's size and SHA-256")
    args = parser.parse_args(argv)
    if args.grace is not None and args.grace < 0:
        parser.error("--grace must not be negative")
    report = run(args.base, args.grace, args.adopt_legacy, args.verify)
    print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    for problem in report.verify_failures:
        print(f"ndr-janitor: {problem}", file=sys.stderr)
    if report.legacy_left:
        print(f"ndr-janitor: {len(report.legacy_left)} partition(s) in the old layout are invisible to readers; "
              "run again with --adopt-legacy to commit them", file=sys.stderr)  # fmt: skip
    return 1 if report.verify_failures else 0


if __name__ == "__main__":
    sys.exit(main())
