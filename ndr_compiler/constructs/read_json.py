"""The ``read_json`` construct: its spec model, its expansion into IR states, and its entry state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ndr_compiler import ir
from ndr_compiler.constructs.registry import Construct
from ndr_compiler.expand import intake as intake_x
from ndr_compiler.expand import services as svc
from ndr_compiler.expand import snippets as js
from ndr_compiler.expand.common import Scope
from ndr_compiler.load import PathKey
from ndr_compiler.models.base import Bucket, Expr, Identifier, StateName, Strict
from ndr_compiler.models.fields import ItemContract, field_names

if TYPE_CHECKING:
    from ndr_compiler.expand.state_machine import Expander


class ReadJson(Strict):
    """Read a JSON object from S3 into a variable."""

    name: StateName
    bucket: Bucket
    key: Expr
    into: Identifier
    select: Expr | None = Field(default=None, description="JSONata over the parsed document as $doc")
    items: ItemContract | None = Field(default=None, description="validate each item of the selected list")


def expand(x: Expander, c: ReadJson, path: PathKey, nxt: str | None, scope: Scope) -> list[ir.State]:
    select = js.inner(c.select) if c.select else "$doc"
    if c.items is not None:
        select = intake_x.items_validation(c.items, select)
    state = ir.Task(
        c.name, x.span(path), x.comment(path, "read_json"), **svc.s3_get_object(c.bucket),
        arguments={"Bucket": js.template(c.bucket), "Key": js.template(c.key)},
        assign={c.into: js.wrap(f"($doc := $parse($states.result.Body); {select})")},
        catch=x.catch(c.name, scope),
    )
    return [x.link(state, nxt)]


def binds(body: dict[str, Any]) -> set[str]:
    items = body.get("items") if isinstance(body.get("items"), dict) else {}
    return {"doc", *field_names(items.get("fields"))}


CONSTRUCT = Construct("read_json", ReadJson, expand, entry=lambda c, in_lock: c.name, binds=binds)
