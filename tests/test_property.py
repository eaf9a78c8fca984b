"""Property: no mutation of a valid spec makes the compiler raise; it always answers with diagnostics."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndr_compiler.compile import compile_specs
from tests.conftest import SPECS

FILES = sorted(p.relative_to(SPECS) for p in SPECS.rglob("*.yaml"))
CHARS = st.sampled_from(list(" \t\n:-{}[]\"'#&*!|>%@`,?$0123456789abcXYZ") + ["{%", "%}", "\x00", "é"])


@st.composite
def text_mutation(draw):
    rel = draw(st.sampled_from(FILES))
    lines = (SPECS / rel).read_text().splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "char", "truncate"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if not lines:
            break
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "char":
            line = lines[i]
            k = draw(st.integers(0, len(line)))
            lines[i] = line[:k] + draw(CHARS) + line[k + 1 :]
        else:
            lines = lines[:i]
    return rel, "".join(lines)


def _replace(value, path, new):
    if not path:
        return new
    key = path[0]
    if (
        isinstance(value, dict)
        and key in value
        or isinstance(value, list)
        and isinstance(key, int)
        and key < len(value)
    ):
        value[key] = _replace(value[key], path[1:], new)
    return value


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def data_mutation(draw):
    rel = draw(st.sampled_from(FILES))
    data = yaml.safe_load((SPECS / rel).read_text())
    paths = list(_paths(data))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        new = draw(
            st.one_of(
                st.none(),
                st.integers(),
                st.booleans(),
                st.text(max_size=12),
                st.just([]),
                st.just({}),
                st.just("{% $nope( %}"),
                st.just({"unknown": 1}),
            )
        )
        data = _replace(data, path, new)
    return rel, yaml.safe_dump(data, sort_keys=False)


def _check(tmp_path: Path, rel: Path, text: str) -> None:
    root = tmp_path / "specs"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(SPECS, root)
    (root / rel).write_text(text)
    result = compile_specs([root], render=False)  # must not raise
    for d in result.diagnostics:
        assert d.code != "E001", d.format()  # a crash caught by the safety net is still a bug
        assert d.span.line >= 1 and d.span.col >= 1 and d.code[0] in "EW" and "\n" not in d.message


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=text_mutation())
def test_text_mutations_never_crash(tmp_path: Path, mutation):
    _check(tmp_path, *mutation)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=data_mutation())
def test_data_mutations_never_crash(tmp_path: Path, mutation):
    _check(tmp_path, *mutation)
