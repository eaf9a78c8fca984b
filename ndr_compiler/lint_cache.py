"""The lint's result cache: the diagnostics of the last lint, keyed by everything the lint reads.

The key hashes the spec files the lint would load (their paths as displayed and their bytes), the working
directory (diagnostics name files relative to it), the compiler's own source and the job-library interface it
imports, and the installed parsers and validators it runs (pydantic, pydantic-core, PyYAML, jsonata: their
module files' size and mtime). Any change to any of those misses; a hit replays the stored diagnostics without
importing the compiler's models. Stdlib only, so that a hit costs the interpreter's start-up and a few reads.

The cache is one JSON file under ``.ndr_cache/`` (``$NDR_CACHE_DIR`` overrides the directory), written
atomically; an unreadable or foreign file is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ndr_compiler.diagnostics import Diagnostic, Span, display_path
from ndr_compiler.sources import discover

CACHE_DIR_ENV = "NDR_CACHE_DIR"
DEFAULT_DIR = ".ndr_cache"
#: bump when the stored format changes
FORMAT = 1
#: the code whose behaviour the lint's result depends on (relative to the repository root)
_CODE_ROOT = Path(__file__).resolve().parents[1]
_CODE = ("ndr_compiler", "ndr_jobs/interface")
_DEPENDENCIES = ("pydantic", "pydantic_core", "yaml", "jsonata")


def cache_file() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_DIR) / "lint.json"


def _update(h: hashlib._Hash, label: str, data: bytes) -> None:
    h.update(f"{label}\0{len(data)}\0".encode())
    h.update(data)


def key(paths: Iterable[Path]) -> str:
    paths = list(paths)
    h = hashlib.sha256()
    _update(h, "format", f"{FORMAT} {sys.version}".encode())
    _update(h, "cwd", os.getcwd().encode())
    _update(h, "args", "\0".join(p.as_posix() for p in paths).encode())
    for sub in _CODE:
        for f in sorted(p for p in (_CODE_ROOT / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            _update(h, f.relative_to(_CODE_ROOT).as_posix(), f.read_bytes())
    for name in _DEPENDENCIES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        st = os.stat(origin) if origin and os.path.exists(origin) else None
        _update(h, name, f"{origin} {st.st_size if st else 0} {st.st_mtime_ns if st else 0}".encode())
    for f in discover(paths):
        _update(h, display_path(f), f.read_bytes())
    return h.hexdigest()


def load(cache_key: str) -> tuple[int, list[Diagnostic]] | None:
    """``(specs checked, diagnostics)`` stored under ``cache_key``, or None."""
    try:
        doc = json.loads(cache_file().read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("key") != cache_key:
            return None
        diags = [Diagnostic(d["code"], d["message"], Span(d["file"], d["line"], d["col"]), d.get("hint"))
                 for d in doc["diagnostics"]]
        return int(doc["specs"]), diags
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store(cache_key: str, specs: int, diagnostics: Iterable[Diagnostic]) -> None:
    """Write the result; a cache that cannot be written is skipped silently (it is only a cache)."""
    doc = {"key": cache_key, "specs": specs, "diagnostics": [
        {"code": d.code, "message": d.message, "file": d.span.file, "line": d.span.line, "col": d.span.col,
         "hint": d.hint} for d in diagnostics]}
    target = cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        ignore = target.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# created by ndr-compile lint\n*\n", encoding="utf-8")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        return
