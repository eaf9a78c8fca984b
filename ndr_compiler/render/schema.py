"""The JSON schema of the spec language, from the pydantic models, for editors (yaml-language-server)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from ndr_compiler.models import KINDS, SUPPORTED_API_VERSIONS


def spec_schema() -> dict[str, Any]:
    models = [KINDS[k] for k in sorted(KINDS)]
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template="#/$defs/{model}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "ndr-spec.schema.json",
        "title": f"ndr spec ({', '.join(SUPPORTED_API_VERSIONS)})",
        "description": "One document of specs/: a Project, StateMachine or Pipeline. Generated; do not edit.",
        "oneOf": [refs[(m, "validation")] for m in models],
        "$defs": top["$defs"],
    }
