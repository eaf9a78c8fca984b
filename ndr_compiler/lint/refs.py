"""Cross-spec rules (E5xx) and spec-level variable rules (E303), over validated models; each construct's own
checks are its registry ``check``."""

from __future__ import annotations

from collections.abc import Iterator

from ndr_compiler.constructs import CONSTRUCTS, CheckContext, walk
from ndr_compiler.diagnostics import Diagnostic
from ndr_compiler.expand.common import RESERVED_VARIABLES
from ndr_compiler.specs import Spec, SpecSet


def state_machine_refs(specs: SpecSet, sm: Spec) -> Iterator[Diagnostic]:
    projects = specs.projects()
    machines = {s.name for s in specs.state_machines()}
    spec = sm.model.spec
    if spec.project not in projects:
        known = ", ".join(sorted(projects)) or "none"
        yield Diagnostic("E501", f"project '{spec.project}' is not defined (known: {known})",
                         sm.doc.span(("spec", "project")))
    context = CheckContext(sm.name, frozenset(machines), sm.doc.span)
    for kind, body, path in walk(spec.steps, ("spec", "steps")):
        for attr in ("into",):
            var = getattr(body, attr, None)
            if isinstance(var, str) and var in RESERVED_VARIABLES:
                yield Diagnostic("E303", f"variable '${var}' is owned by the constructs; choose another name",
                                 sm.doc.span((*path, attr)))
        yield from CONSTRUCTS[kind].check(body, path, context)
