"""Image URIs of an environment against ECR: resolved to digests for the deploy, repositories and login for push.

Every value of an Environment that is an ECR image URI is resolved to ``<repository>@sha256:...`` with ECR
``DescribeImages``; the deployed pipeline definitions reference that digest, so a tag moved later changes nothing
deployed. A URI tagged ``ctx`` names the image built from this tree: the tag is replaced by the context tag of the
image its processors run on (``ndr_compiler.images``). An image missing in ECR refuses the deploy.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ndr_compiler import images
from ndr_compiler.deploy.placeholders import PLACEHOLDER

_MISSING = ("ImageNotFoundException", "RepositoryNotFoundException")


class ImageMissing(Exception):
    """An image an environment names is not in ECR (one line: the URIs and the command that pushes them)."""


@dataclass
class ResolvedImage:
    value: str  # the Environment value's name
    uri: str  # as the Environment says
    tagged: str  # with ``ctx`` replaced by the context tag
    digest: str | None = None  # None: not in ECR

    @property
    def pinned(self) -> str:
        parsed = images.parse_ecr_uri(self.tagged)
        assert parsed is not None and self.digest is not None
        return f"{parsed.repository_uri}@{self.digest}"

    def line(self) -> str:
        shown = self.pinned if self.digest else "MISSING in ECR"
        via = f" ({self.tagged.rsplit(':', 1)[-1]})" if self.tagged != self.uri else ""
        return f"image     {self.value:28} {self.uri}{via} -> {shown}"


def image_kinds(processors: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """Which image (spark or python) each value names, from the processors' ``(image_uri, spark)``: a processor's
    URI ``${Name}`` makes value ``Name`` that image."""
    kinds: dict[str, str] = {}
    for uri, spark in processors:
        if m := PLACEHOLDER.fullmatch(uri):
            kinds[m[1]] = "spark" if spark else "python"
    return kinds


def resolve(ecr: Callable[[str], Any], values: dict[str, str], kinds: dict[str, str],
            ctx_tags: Callable[[], dict[str, str]]) -> list[ResolvedImage]:
    """Each ECR image URI of ``values`` with its digest in ECR (None when missing). ``ecr(region)`` is an ECR client
    of that region (a URI's region may differ from the environment's); ``ctx_tags()`` gives each image kind's context
    tag (computed only when a value uses the ``ctx`` tag)."""
    out = []
    tags: dict[str, str] | None = None
    for name, value in sorted(values.items()):
        parsed = images.parse_ecr_uri(value)
        if parsed is None:
            continue
        tagged = value
        if parsed.tag == images.CTX:
            if name not in kinds:
                raise ImageMissing(f"value {name} ({value}) uses the tag {images.CTX!r}, the image built from this "
                                   "tree, but no processor runs on it, so which image it names is unknown; give it "
                                   "an explicit tag")
            tags = tags if tags is not None else ctx_tags()
            tagged = f"{parsed.repository_uri}:{tags[kinds[name]]}"
            if parsed.digest:
                tagged += f"@{parsed.digest}"
        ids = [{"imageDigest": parsed.digest}] if parsed.digest else [{"imageTag": tags_of(tagged)}]
        try:
            found = ecr(parsed.region).describe_images(registryId=parsed.account, repositoryName=parsed.repo,
                                                       imageIds=ids)
            digest = found["imageDetails"][0]["imageDigest"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            digest = None
        out.append(ResolvedImage(name, value, tagged, digest))
    return out


def tags_of(uri: str) -> str:
    parsed = images.parse_ecr_uri(uri)
    assert parsed is not None
    return parsed.tag or "latest"


def refuse_missing(resolved: list[ResolvedImage], env_name: str) -> None:
    missing = [r.tagged for r in resolved if r.digest is None]
    if missing:
        raise ImageMissing(f"image(s) not in ECR: {', '.join(missing)}; push them with "
                           f"`ndr-compile images push --env {env_name}`, then deploy again")


def ensure_repository(ecr: Any, uri: images.EcrUri, prefix: str) -> bool:
    """The repository of ``uri``, created (tagged ``ndr:environment`` = ``prefix``, scan on push) when missing;
    whether it was created."""
    try:
        ecr.describe_repositories(registryId=uri.account, repositoryNames=[uri.repo])
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise
    ecr.create_repository(repositoryName=uri.repo, tags=[{"Key": "ndr:environment", "Value": prefix}],
                          imageScanningConfiguration={"scanOnPush": True}, imageTagMutability="MUTABLE")
    return True


def login(ecr: Any, account: str) -> tuple[str, str, str]:
    """(user, password, registry endpoint) of an ECR authorization token for ``account``'s registry."""
    data = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return user, password, data["proxyEndpoint"]
