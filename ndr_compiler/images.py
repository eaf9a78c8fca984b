"""The pipelines' container images: each image's build context, assembled from this source tree deterministically,
and its content tag ``ctx-<first 16 hex of the context's SHA-256>`` (``docs/deploy.md``, Images).

A context is an uncompressed tar with sorted entries and fixed mtime, owner and mode: the Dockerfile, the locked
requirements, the job library as a wheel (written here, byte for byte reproducible), the numba warm-up and, for
the Spark image, the launcher. Same tree, same bytes, same tag; a change to any shipped file, another tag. Only the
job library ships: a change to the compiler or the local layer needs no new image.

Standard library only (the CLI imports it for ``images`` and the deploy; Docker runs as a subprocess).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ndr_jobs.interface.image import SPARK_FRAMEWORK_VERSION, SPARK_IMAGE_REPOSITORY, SPARK_PY_VERSION

#: a value (or processor image URI) with this tag names the image built from this tree: its ``ctx-...`` tag
CTX = "ctx"
CTX_TAG = re.compile(r"ctx-[0-9a-f]{16}")
ECR_URI = re.compile(r"(?P<registry>(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)/"
                     r"(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
                     r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?")
#: the SageMaker Spark Processing image the Spark image builds on: the SageMaker SDK's image_uri_config/spark.json,
#: processing 3.5 (tests/test_images.py holds this table to the SDK's)
SPARK_VERSION, SPARK_PY, SPARK_REPOSITORY = SPARK_FRAMEWORK_VERSION, SPARK_PY_VERSION, SPARK_IMAGE_REPOSITORY
SPARK_REGISTRIES = {
    "af-south-1": "309385258863", "ap-east-1": "732049463269", "ap-east-2": "533267296287",
    "ap-northeast-1": "411782140378", "ap-northeast-2": "860869212795", "ap-northeast-3": "102471314380",
    "ap-south-1": "105495057255", "ap-south-2": "873151114052", "ap-southeast-1": "759080221371",
    "ap-southeast-2": "440695851116", "ap-southeast-3": "800295151634", "ap-southeast-4": "819679513684",
    "ap-southeast-5": "841784149062", "ap-southeast-6": "278240940207", "ap-southeast-7": "471112967968",
    "ca-central-1": "446299261295", "ca-west-1": "000907499111", "cn-north-1": "671472414489",
    "cn-northwest-1": "844356804704", "eu-central-1": "906073651304", "eu-central-2": "142351485170",
    "eu-isoe-west-1": "010264522435", "eu-north-1": "330188676905", "eu-south-1": "753923664805",
    "eu-south-2": "833944533722", "eu-west-1": "571004829621", "eu-west-2": "836651553127",
    "eu-west-3": "136845547031", "eusc-de-east-1": "713710892325", "il-central-1": "408426139102",
    "me-central-1": "395420993607", "me-south-1": "750251592176", "mx-central-1": "211125459255",
    "sa-east-1": "737130764395", "us-east-1": "173754725891", "us-east-2": "314815235551",
    "us-gov-east-1": "260923028637", "us-gov-west-1": "271483468897", "us-west-1": "667973535471",
    "us-west-2": "153931337802",
}  # fmt: skip
#: the wheel's files: the job library's modules
PACKAGE = "ndr_jobs"
WHEEL_DATE = (1980, 1, 1, 0, 0, 0)
SOURCE_ROOT_ENV = "NDR_SOURCE_ROOT"


class ImageError(Exception):
    """A context cannot be assembled (a shipped file is missing) or Docker cannot run: one line, with the fix."""


@dataclass(frozen=True)
class Image:
    kind: str  # spark | python: which processors run on it (ProcessorProfile.spark)
    dockerfile: str
    requirements: str
    #: other shipped files, at their path in the tree
    files: tuple[str, ...] = ()

    @property
    def local_name(self) -> str:
        return f"ndr-{self.kind}"


IMAGES = {
    "spark": Image("spark", "docker/spark/Dockerfile", "requirements/spark-image.txt",
                   ("docker/warm_numba.py", "ndr_jobs/runtime/spark_launcher.py")),
    "python": Image("python", "docker/python/Dockerfile", "requirements/python-image.txt", ("docker/warm_numba.py",)),
}


@dataclass(frozen=True)
class EcrUri:
    registry: str
    account: str
    region: str
    repo: str
    tag: str | None
    digest: str | None

    @property
    def repository_uri(self) -> str:
        return f"{self.registry}/{self.repo}"


def parse_ecr_uri(value: str) -> EcrUri | None:
    """The parts of an ECR image URI (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>[:tag][@sha256:...]``);
    None for any other value."""
    m = ECR_URI.fullmatch(value)
    if m is None:
        return None
    return EcrUri(m["registry"], m["account"], m["region"], m["repo"], m["tag"], m["digest"])


def spark_base(region: str) -> str:
    """The SageMaker Spark Processing image of ``region`` (the Spark image's base)."""
    if region not in SPARK_REGISTRIES:
        raise ImageError(f"no SageMaker Spark Processing {SPARK_VERSION} image in region {region!r} (the SDK's "
                         f"spark.json names: {', '.join(sorted(SPARK_REGISTRIES))})")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return (f"{SPARK_REGISTRIES[region]}.dkr.ecr.{region}.{domain}/{SPARK_REPOSITORY}:"
            f"{SPARK_VERSION}-cpu-{SPARK_PY}")


def source_root() -> Path:
    """The tree images are built from: ``$NDR_SOURCE_ROOT``, else the checkout this compiler runs from."""
    root = Path(os.environ.get(SOURCE_ROOT_ENV) or Path(__file__).resolve().parents[1])
    if not (root / "pyproject.toml").is_file() or not (root / "docker").is_dir():
        raise ImageError(f"{root} is not an ndr source checkout (no pyproject.toml and docker/): images are built "
                         f"from one; run from a clone or set {SOURCE_ROOT_ENV}")
    return root


def _read(root: Path, rel: str) -> bytes:
    path = root / rel
    if not path.is_file():
        raise ImageError(f"{rel} is missing from {root}: every image context ships it")
    return path.read_bytes()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel(root: Path) -> tuple[str, bytes]:
    """The job library as a wheel (file name, bytes): its modules, the project's name, version and the ``jobs``
    extra's requirements as metadata. Stored entries, a fixed date, sorted: the same tree gives the same bytes."""
    project = tomllib.loads(_read(root, "pyproject.toml").decode())["project"]
    name, version = project["name"], project["version"]
    files: dict[str, bytes] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" not in rel:
            files[rel] = path.read_bytes()
    if f"{PACKAGE}/__init__.py" not in files:
        raise ImageError(f"{PACKAGE}/ is missing from {root}: every image ships the job library")
    info = f"{name}-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {r}\n" for r in project.get("optional-dependencies", {}).get("jobs", []))
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 f"Summary: {project.get('description', '')} (the job library)\n"
                                 f"Requires-Python: {project.get('requires-python', '')}\n{requires}").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: ndr_compiler.images\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    files[f"{info}/top_level.txt"] = f"{PACKAGE}\n".encode()
    record = "".join(f"{rel},{_record_hash(data)},{len(data)}\n" for rel, data in sorted(files.items()))
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for rel, data in sorted(files.items()):
            entry = zipfile.ZipInfo(rel, WHEEL_DATE)
            entry.create_system, entry.external_attr = 3, 0o100644 << 16
            zf.writestr(entry, data)
    return f"{name}-{version}-py3-none-any.whl", out.getvalue()


def context_files(image: Image, root: Path) -> dict[str, bytes]:
    """What the context of ``image`` holds, by path: the tree's files at their own path, the wheel under dist/."""
    files = {rel: _read(root, rel) for rel in (image.dockerfile, image.requirements, *image.files)}
    whl, data = wheel(root)
    files[f"dist/{whl}"] = data
    return files


def context(image: Image, root: Path) -> bytes:
    """The build context of ``image`` as tar bytes: entries sorted, mtime 0, uid/gid 0, mode 0644."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel, data in sorted(context_files(image, root).items()):
            entry = tarfile.TarInfo(rel)
            entry.size, entry.mtime, entry.mode = len(data), 0, 0o644
            entry.uid = entry.gid = 0
            entry.uname = entry.gname = ""
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def context_tag(data: bytes) -> str:
    return f"ctx-{hashlib.sha256(data).hexdigest()[:16]}"


def tags(root: Path) -> dict[str, str]:
    """Each image kind's content tag for the tree at ``root``."""
    return {kind: context_tag(context(image, root)) for kind, image in sorted(IMAGES.items())}


# -- Docker -----------------------------------------------------------------------------------------------------
def docker() -> str:
    """The docker client's path; an :class:`ImageError` saying so when there is none."""
    found = shutil.which("docker")
    if found is None:
        raise ImageError("docker is not installed or not on PATH: `ndr-compile images build|push` runs "
                         "`docker build`; install Docker (or run it where Docker exists, e.g. `make images` in CI)")
    return found


def run_docker(args: list[str], stdin: bytes | None = None) -> None:
    """``docker <args>``, its output passed through; a failure is an :class:`ImageError` naming the command."""
    done = subprocess.run([docker(), *args], input=stdin, check=False)
    if done.returncode != 0:
        shown = " ".join(a for a in args if not a.startswith("--password"))
        raise ImageError(f"`docker {shown}` failed (exit {done.returncode}); its output is above")


def build(image: Image, root: Path, base: str | None = None) -> str:
    """``docker build`` of ``image`` with its context on stdin; returns the local reference ``ndr-<kind>:ctx-...``."""
    data = context(image, root)
    ref = f"{image.local_name}:{context_tag(data)}"
    args = ["build", "--tag", ref, "--file", image.dockerfile]
    if base:
        args += ["--build-arg", f"BASE_IMAGE={base}"]
    run_docker([*args, "-"], stdin=data)
    return ref
