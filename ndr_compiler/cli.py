"""``ndr-compile``: compile specs into ``generated/``, check it is fresh, lint specs.

Exit codes: 0 success; 1 diagnostics with errors, or ``--check`` found ``generated/`` stale;
2 usage error.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ndr_compiler import lint_cache
from ndr_compiler.emit import emit
from ndr_compiler.report import FORMATS, select
from ndr_compiler.report import render as render_report


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause CPython's cycle collector while the compiler's modules load and the specs are checked: it would
    run about a hundred times over objects that mostly live on (issue 21: ~1% of the lint's instructions)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()



if TYPE_CHECKING:
    from ndr_compiler.compile import Compilation


def compile_specs(paths: Iterable[Path], render: bool = True) -> Compilation:
    """The compiler, imported on first use (a cached lint never loads it)."""
    # pydantic looks for plugins among every installed distribution's entry points when the first model is
    # built; the spec models use none (a user's own setting wins)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    with _no_gc():
        from ndr_compiler.compile import compile_specs as run

        return run(paths, render=render)

#: the extra of pyproject.toml each command needs beyond the core (lint and compile need only the core)
EXTRA_OF = {"run": "local", "run-pipeline": "local", "demo": "local", "plan": "deploy", "compile": "deploy",
            "images": "deploy"}
#: exit code of a problem of the machine rather than of the specs (a missing extra, no docker)
ENVIRONMENT_ERROR = 2


class DefaultGroup(click.Group):
    """``ndr-compile specs/`` means ``ndr-compile compile specs/``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["compile", *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = EXTRA_OF.get(ctx.invoked_subcommand or "")
            if extra is None or (exc.name or "ndr").startswith("ndr"):
                raise
            click.echo(f"error: {exc}: this command needs the {extra!r} extra: pip install 'ndr[{extra}]'", err=True)
            sys.exit(ENVIRONMENT_ERROR)


def _report(result: Compilation) -> None:
    for d in result.diagnostics:
        click.echo(d.format(), err=True)
    errors = sum(d.severity == "error" for d in result.diagnostics)
    if errors:
        click.echo(f"{errors} error(s)", err=True)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ndr")
def main() -> None:
    """Compile NDR specs into Step Functions and SageMaker definitions."""


@main.command("compile")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", default="generated", type=click.Path(path_type=Path), show_default=True,
              help="Output directory.")
@click.option("--check", is_flag=True, help="Do not write; exit 1 with a diff if generated/ is stale.")
@click.option("--deploy", is_flag=True, help="Deploy to --env after checking generated/ is fresh and lint passes.")
@click.option("--env", "env_name", help="Environment spec name (specs/environments/<env>.yaml) for --deploy.")
@click.option("--prune", is_flag=True, help="With --deploy: also delete the plan's orphans (this environment's "
              "rules, state machines, pipelines and roles that no spec names any more), rules first.")
@click.option("--allow-dirty", is_flag=True,
              help="Deploy uncommitted specs or generated/ anyway, tagged <commit>-dirty (default: refuse).")
def compile_cmd(paths: tuple[Path, ...], out_dir: Path, check: bool, deploy: bool, env_name: str | None,
                prune: bool, allow_dirty: bool) -> None:
    """Validate specs and render them into OUT (default: generated/)."""
    if not deploy:
        _may_hard_exit()
    result = compile_specs(paths or (Path("specs"),))
    _report(result)
    if not result.ok:
        sys.exit(1)
    if deploy:
        _deploy(result, out_dir, env_name, apply=True, specs=paths or (Path("specs"),), allow_dirty=allow_dirty,
                prune=prune)
        return
    res = emit(result.artifacts, out_dir, check=check)
    if check:
        if res.stale:
            click.echo(res.diff, nl=False)
            click.echo(f"{out_dir}/ is stale: {len(res.stale)} file(s) differ; run `ndr-compile specs/`",
                       err=True)
            sys.exit(1)
        click.echo(f"{out_dir}/ is up to date ({len(res.unchanged)} files)")
        return
    for rel in res.written:
        click.echo(f"wrote    {out_dir / rel}")
    for rel in res.removed:
        click.echo(f"removed  {out_dir / rel}")
    click.echo(f"{len(res.written)} written, {len(res.unchanged)} unchanged, {len(res.removed)} removed")


@main.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text: file:line:col CODE message; json; github: workflow annotations; sarif: code scanning.")
@click.option("--select", "selected", multiple=True, metavar="CODE",
              help="Report only these codes or prefixes (E3, E301); repeatable.")
@click.option("--ignore", "ignored", multiple=True, metavar="CODE",
              help="Do not report these codes or prefixes; repeatable.")
@click.option("--output", type=click.Path(path_type=Path), help="Write the report to a file instead of stdout.")
@click.option("--no-cache", is_flag=True, envvar="NDR_NO_CACHE",
              help="Lint from scratch and leave the cache alone (.ndr_cache/, or $NDR_CACHE_DIR).")
def lint_cmd(paths: tuple[Path, ...], fmt: str, selected: tuple[str, ...], ignored: tuple[str, ...],
             output: Path | None, no_cache: bool) -> None:
    """Check specs without writing anything (never imports the SageMaker SDK). An unchanged lint (the same spec
    files, compiler and validators) replays its cached result.

    Exit codes: 0 no errors; 1 errors reported; 2 usage error.
    """
    _may_hard_exit()
    paths = paths or (Path("specs"),)
    key = None if no_cache else lint_cache.key(paths)
    cached = lint_cache.load(key) if key else None
    if cached is None:
        result = compile_specs(paths, render=False)
        checked, all_diags = len(result.specs.specs), result.diagnostics
        if key:
            lint_cache.store(key, checked, all_diags)
    else:
        checked, all_diags = cached
    diags = select(all_diags, selected, ignored)
    text = render_report(diags, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
    elif text:
        click.echo(text, nl=False)
    errors = sum(d.severity == "error" for d in diags)
    if fmt == "text":
        if errors:
            click.echo(f"{errors} error(s)", err=True)
        else:
            warnings = len(diags) - errors
            click.echo(f"{checked} spec(s) checked, "
                       + (f"no errors, {warnings} warning(s)" if warnings else "no problems"))
    if errors:
        sys.exit(1)


@main.command("diff")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--base", default="HEAD", show_default=True, help="Git ref whose committed generated/ is the base.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)
def diff_cmd(paths: tuple[Path, ...], base: str, fmt: str) -> None:
    """Semantic diff between a git ref and the working tree: of generated/ (against what the specs compile to)
    and of the Environment specs (schedules and event rules, which the deploy turns into EventBridge rules)."""
    from ndr_compiler import semantic_diff

    paths = paths or (Path("specs"),)
    result = compile_specs(paths)
    _report(result)
    if not result.ok:
        sys.exit(1)
    try:
        before = semantic_diff.artifacts_at(base)
        envs_before = semantic_diff.environments_at(base, [str(p) for p in paths])
    except Exception as exc:  # not a git checkout, unknown ref
        click.echo(f"error: cannot read generated/ at {base!r}: {exc}", err=True)
        sys.exit(2)
    after = {a.relpath: a.text for a in result.artifacts}
    envs_after = {s.name: s.doc.data.get("spec") or {} for s in result.specs.of_kind("Environment")}
    triggers = semantic_diff.machine_triggers(envs_after, result.machines)
    changes = semantic_diff.diff_artifacts(before, after, triggers)
    changes += semantic_diff.diff_environments(envs_before, envs_after)
    click.echo(semantic_diff.render(changes, fmt, base), nl=False)


def _stale_message(out_dir: Path, stale: list[str], doing: str) -> str:
    shown = "".join(f"\n  {out_dir}/{rel}" for rel in sorted(stale)[:20])
    more = f"\n  ... and {len(stale) - 20} more" if len(stale) > 20 else ""
    return (f"error: refusing to {doing}: {len(stale)} file(s) of {out_dir}/ differ from what the specs compile to:"
            f"{shown}{more}\nrun `ndr-compile specs/`, review the diff and commit it, then {doing} again")


def _dirty(paths: list[Path]) -> list[str]:
    """Files under ``paths`` that differ from git's HEAD (uncommitted or untracked); [] outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *map(str, paths)], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in out.splitlines() if line.strip()]


def _deploy(result: Compilation, out_dir: Path, env_name: str | None, apply: bool, specs: tuple[Path, ...] = (),
            allow_dirty: bool = False, prune: bool = False) -> None:
    import logging

    import boto3

    from ndr_compiler.deploy.engine import Deployer, git_commit
    from ndr_compiler.deploy.errors import PROBE_CONFIG, explain
    from ndr_compiler.deploy.images import ImageMissing, refuse_missing
    from ndr_compiler.deploy.lock import DeployLocked, deploy_lock, holder
    from ndr_compiler.images import ImageError

    for name in ("botocore", "boto3", "urllib3"):  # their INFO lines (credentials found, retries) are not ours
        logging.getLogger(name).setLevel(logging.WARNING)
    envs = {s.name: s for s in result.specs.of_kind("Environment")}
    if not env_name or env_name not in envs:
        known = ", ".join(sorted(envs)) or "none"
        click.echo(f"error: --env must name an Environment spec (known: {known})", err=True)
        sys.exit(2)
    doing = "deploy" if apply else "plan"
    fresh = emit(result.artifacts, out_dir, check=True)
    if fresh.stale:
        click.echo(_stale_message(out_dir, fresh.stale, doing), err=True)
        sys.exit(1)
    commit = git_commit()
    dirty = _dirty([*specs, out_dir]) if apply else []
    if dirty:
        if not allow_dirty:
            click.echo(f"error: refusing to deploy uncommitted changes ({', '.join(dirty[:5])}"
                       f"{', ...' if len(dirty) > 5 else ''}): commit them, or pass --allow-dirty to deploy them "
                       "tagged as a dirty tree", err=True)
            sys.exit(1)
        commit = f"{commit}-dirty"
    env = envs[env_name].model
    project = result.specs.projects()[env.spec.project].model
    try:
        session = boto3.session.Session()
        sts = session.client("sts", region_name=env.spec.region, config=PROBE_CONFIG)
        account = sts.get_caller_identity()["Account"]
        if account != env.spec.account:
            click.echo(f"error: refusing to {doing}: the credentials are for account {account}, environment "
                       f"{env_name} is account {env.spec.account}; use that account's credentials (AWS_PROFILE)",
                       err=True)
            sys.exit(1)
        deployer = Deployer(result, env, project, session, commit=commit)
        resolved = deployer.resolve_images(refuse_missing=apply)  # before anything changes: the lock table
        for image in resolved:
            click.echo(image.line())
        try:
            refuse_missing(resolved, env_name)
        except ImageMissing as exc:  # the plan goes on with the tags; the deploy has refused above
            click.echo(f"note: the deploy would be refused: {exc}")
        with ExitStack() as stack:
            if apply:  # one deploy at a time: plan and apply under the environment's deploy lock
                table = deployer.ensure_lock_table()
                stack.enter_context(deploy_lock(deployer.client("dynamodb"), table, env.spec.prefix, holder(commit)))
            _plan_and_apply(deployer, env_name, apply, prune)
    except (DeployLocked, ImageMissing, ImageError) as exc:
        click.echo(f"error: refusing to {doing}: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        click.echo(f"error: {doing} stopped: {explain(exc) or f'{type(exc).__name__}: {exc} (please report it)'}",
                   err=True)
        sys.exit(1)


def _plan_and_apply(deployer: Any, env_name: str, apply: bool, prune: bool) -> None:
    from ndr_compiler.deploy.engine import DeployError
    from ndr_jobs.interface.progress import Progress

    changes = deployer.plan()
    for ch in changes:
        click.echo(ch.line())
        for line in ch.details:
            click.echo(f"    {line}")
    todo = [c for c in changes if c.action in ("create", "update")]
    creates = sum(c.action == "create" for c in todo)
    unchanged = sum(c.action == "unchanged" for c in changes)
    orphaned = len(changes) - len(todo) - unchanged
    click.echo(f"plan: {creates} to create, {len(todo) - creates} to update, {unchanged} unchanged"
               + (f", {orphaned} in no spec ({'deleted' if prune else 'left in place'})" if orphaned else ""))
    if not apply:
        return
    try:
        with Progress(len(todo) + (orphaned if prune else 0), f"deploy to {env_name}") as progress:
            applied = deployer.apply(todo, before=lambda ch: progress.step(f"{ch.action} {ch.kind} {ch.name}"))
            if prune:
                applied += deployer.prune(changes, before=lambda ch: progress.step(f"delete {ch.kind} {ch.name}"))
    except DeployError as exc:
        for ch in exc.applied:
            click.echo(f"applied  {ch.kind} {ch.name}")
        click.echo(f"error: {exc}; {len(exc.applied)} change(s) applied before it. Run the deploy again to "
                   "converge.", err=True)
        sys.exit(1)
    click.echo(f"deployed to {env_name}: {len(applied)} changed")


@main.command("plan")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--env", "env_name", required=True, help="Environment spec name.")
@click.option("--out", "out_dir", default="generated", type=click.Path(path_type=Path), show_default=True)
def plan_cmd(paths: tuple[Path, ...], env_name: str, out_dir: Path) -> None:
    """What --deploy would create, update or leave unchanged in ENV (drift included); changes nothing."""
    result = compile_specs(paths or (Path("specs"),))
    _report(result)
    if not result.ok:
        sys.exit(1)
    _cadence(result, env_name)
    _deploy(result, out_dir, env_name, apply=False)


def _cadence(result: Compilation, env_name: str) -> None:
    """The cadence model's table for ``env_name`` (offline: printed before the plan asks AWS anything)."""
    from ndr_compiler.cadence import chunk_windows_of, load_runtimes, render_plan, trigger_paths

    env = next((s.model for s in result.specs.of_kind("Environment") if s.name == env_name), None)
    if env is None:  # _deploy says which environments exist
        return
    measured = load_runtimes()
    machines = {m.name: m for m in result.machines if not m.generated}
    project = result.specs.projects().get(env.spec.project)
    chunk = chunk_windows_of(project.model.spec.defaults if project else {})
    paths = list(trigger_paths(env.spec, machines, result.pipelines, measured, chunk))
    click.echo(render_plan(env_name, env.spec, measured, paths))


@main.group("images")
def images_cmd() -> None:
    """Build and push the pipelines' container images, tagged ctx-<hash of their build context> (docs/deploy.md)."""


def _image_env(env: str | None, specs: Path) -> tuple[Any, dict[str, str]]:
    """The Environment named ``env`` (a name, or its file specs/environments/<name>.yaml) and which image each of
    its values names (from the processors of the compiled pipelines); (None, {}) without ``env``."""
    from ndr_compiler.deploy.images import image_kinds

    if env is None:
        return None, {}
    name = Path(env).stem if env.endswith((".yaml", ".yml")) else env
    result = compile_specs([specs], render=False)
    _report(result)
    if not result.ok:
        sys.exit(1)
    envs = {s.name: s.model for s in result.specs.of_kind("Environment")}
    if name not in envs:
        click.echo(f"error: --env must name an Environment spec (known: {', '.join(sorted(envs)) or 'none'})",
                   err=True)
        sys.exit(2)
    kinds = image_kinds((s.processor.image_uri, s.processor.spark) for p in result.pipelines.values() for s in p.steps)
    return envs[name], kinds


def _images_or_exit(action: Any) -> None:
    from ndr_compiler.images import ImageError, docker

    try:
        docker()
    except ImageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ENVIRONMENT_ERROR)
    try:
        action()
    except ImageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


_IMAGE_KINDS = click.Choice(["spark", "python"])


class _Registries:
    """Docker logins to ECR registries, each once per command (boto3's credentials; an ECR token lasts 12 h)."""

    def __init__(self) -> None:
        import boto3

        self.session = boto3.session.Session()
        self.done: set[str] = set()

    def ecr(self, region: str) -> Any:
        from ndr_compiler.deploy.errors import CLIENT_CONFIG

        return self.session.client("ecr", region_name=region, config=CLIENT_CONFIG)

    def login(self, uri: Any) -> None:
        from ndr_compiler import images
        from ndr_compiler.deploy.images import login

        if uri.registry in self.done:
            return
        user, password, endpoint = login(self.ecr(uri.region), uri.account)
        images.run_docker(["login", "--username", user, "--password-stdin", endpoint], stdin=password.encode())
        self.done.add(uri.registry)


def _build_image(kind: str, region: str | None, root: Path, registries: _Registries | None) -> str:
    """``docker build`` of one image; the Spark image's base is SageMaker's image of ``region`` (us-east-1's by
    default), whose ECR registry is logged in to first unless ``registries`` is None (--no-login)."""
    from ndr_compiler import images

    base = images.spark_base(region or "us-east-1") if kind == "spark" else None
    base_uri = images.parse_ecr_uri(base) if base else None
    if base_uri is not None and registries is not None:
        registries.login(base_uri)
    return images.build(images.IMAGES[kind], root, base)


def _aws_errors(action: Any) -> Any:
    """``action`` with AWS failures (no credentials, no access, throttling) as one-line image errors."""
    from ndr_compiler import images
    from ndr_compiler.deploy.errors import explain

    def run() -> None:
        try:
            action()
        except images.ImageError:
            raise
        except Exception as exc:
            raise images.ImageError(explain(exc) or f"{type(exc).__name__}: {exc}") from exc

    return run


_NO_LOGIN = click.option("--no-login", is_flag=True, help="Do not log in to the Spark base image's ECR registry "
                         "(SageMaker's account) before building: docker is logged in already.")


@images_cmd.command("build")
@click.option("--env", "env", help="Environment (name or specs/environments/<name>.yaml): the Spark base of its "
              "region (default us-east-1's).")
@click.option("--specs", "specs_dir", default="specs", type=click.Path(path_type=Path), show_default=True)
@click.option("--only", "only", multiple=True, type=_IMAGE_KINDS, help="Build only this image; repeatable.")
@_NO_LOGIN
def images_build_cmd(env: str | None, specs_dir: Path, only: tuple[str, ...], no_login: bool) -> None:
    """docker build each image with its deterministic context on stdin, tagged ndr-<kind>:ctx-<hash>."""
    from ndr_compiler import images

    def action() -> None:
        environment, _ = _image_env(env, specs_dir)
        root = images.source_root()
        kinds = only or sorted(images.IMAGES)
        registries = None if no_login or "spark" not in kinds else _Registries()
        for kind in kinds:
            region = environment.spec.region if environment else None
            click.echo(f"built    {_build_image(kind, region, root, registries)}")

    _images_or_exit(_aws_errors(action))


@images_cmd.command("push")
@click.option("--env", "env", required=True, help="Environment (name or specs/environments/<name>.yaml).")
@click.option("--specs", "specs_dir", default="specs", type=click.Path(path_type=Path), show_default=True)
@_NO_LOGIN
def images_push_cmd(env: str, specs_dir: Path, no_login: bool) -> None:
    """Build, then push each image to the ECR repositories of the environment's image URIs as <repo>:ctx-<hash>
    (repositories created when missing); the deploy then resolves the URIs to these images' digests."""
    from ndr_compiler import images
    from ndr_compiler.deploy.images import ensure_repository

    def action() -> None:
        environment, kinds = _image_env(env, specs_dir)
        root = images.source_root()
        targets = sorted({(kinds[k], uri) for k, v in environment.spec.values.items()
                          if k in kinds and (uri := images.parse_ecr_uri(v)) is not None}, key=str)
        if not targets:
            raise images.ImageError(f"environment {env} names no ECR image URI that a processor runs on")
        registries = _Registries()
        built: dict[str, str] = {}
        for kind, uri in targets:
            if kind not in built:
                built[kind] = _build_image(kind, environment.spec.region, root, None if no_login else registries)
            if ensure_repository(registries.ecr(uri.region), uri, environment.spec.prefix):
                click.echo(f"created  ECR repository {uri.repo}")
            registries.login(uri)
            remote = f"{uri.repository_uri}:{built[kind].split(':', 1)[1]}"
            images.run_docker(["tag", built[kind], remote])
            images.run_docker(["push", remote])
            click.echo(f"pushed   {remote}")

    _images_or_exit(_aws_errors(action))


@main.command("run-pipeline")
@click.argument("pipeline")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A pipeline parameter; repeatable.")
@click.option("--value", "values", multiple=True, metavar="NAME=VALUE",
              help="A ${NAME} placeholder of step environments (e.g. NdrStorageRoot=/tmp/ndr); repeatable.")
@click.option("--generated", default="generated", type=click.Path(path_type=Path), show_default=True)
@click.option("--isolated", is_flag=True,
              help="A fresh process (and Spark JVM) per step, as on SageMaker; default: one warm worker for all steps.")
def run_pipeline_cmd(pipeline: str, params: tuple[str, ...], values: tuple[str, ...], generated: Path,
                     isolated: bool) -> None:
    """Run a compiled pipeline's steps locally, in dependency order, exactly as its definition says."""
    from ndr_local.pipeline_runner import PipelineRunError, run_pipeline
    from ndr_local.step_worker import SubprocessExecutor, WarmExecutor

    def pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
        out = {}
        for item in items:
            if "=" not in item:
                click.echo(f"error: {what} {item!r} is not NAME=VALUE", err=True)
                sys.exit(2)
            k, v = item.split("=", 1)
            out[k] = v
        return out

    executor = SubprocessExecutor() if isolated else WarmExecutor()
    try:
        run = run_pipeline(generated, pipeline, pairs(params, "--param"), pairs(values, "--value"), echo=click.echo,
                           executor=executor)
    except PipelineRunError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        executor.close()
    for s in run.steps:
        click.echo(f"{s.status:11} {s.name} ({s.seconds:.1f} s)")
        if s.status == "Failed":
            click.echo(s.stderr.rstrip(), err=True)
    click.echo(f"pipeline {pipeline}: {run.status}")
    if run.status != "Succeeded":
        sys.exit(1)


@main.command("run")
@click.argument("state_machine")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The execution input (JSON), e.g. an event of shared/contracts.")
@click.option("--specs", "specs_dir", default="specs", type=click.Path(path_type=Path), show_default=True)
@click.option("--generated", default="generated", type=click.Path(path_type=Path), show_default=True)
@click.option("--value", "values", multiple=True, metavar="NAME=VALUE",
              help="A ${NAME} of step environments; NdrStorageRoot defaults to var/ndr. s3:// paths live under "
                   "$NDR_LOCAL_S3_ROOT (default var/ndr/s3).")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for the execution.")
@click.option("--wait-scale", default=0.1, show_default=True,
              help="Wait states last this fraction of their seconds (poll budgets shrink alike).")
@click.option("--isolated", is_flag=True,
              help="A fresh process (and Spark JVM) per step, as on SageMaker; default: one warm worker for all steps.")
def run_cmd(state_machine: str, input_path: Path, specs_dir: Path, generated: Path, values: tuple[str, ...],
            timeout: float, wait_scale: float, isolated: bool) -> None:
    """Run a compiled state machine offline; its pipelines run the real jobs on this machine."""
    import json

    from ndr_jobs.interface.progress import Progress
    from ndr_local.platform import stand_up
    from ndr_local.runner import LocalPipelines, expected_runs, local_pipeline_names
    from ndr_local.sfn_runtime import offline_aws
    from ndr_local.step_worker import SubprocessExecutor, WarmExecutor

    result = compile_specs([specs_dir], render=False)
    _report(result)
    if not result.ok:
        sys.exit(1)
    machines = {m.name for m in result.machines}
    if state_machine not in machines:
        click.echo(f"error: no state machine '{state_machine}' (known: {', '.join(sorted(machines))})", err=True)
        sys.exit(2)
    try:
        payload = json.loads(input_path.read_text())
    except ValueError as exc:
        click.echo(f"error: {input_path} is not JSON: {exc}", err=True)
        sys.exit(2)
    env_values = {"NdrStorageRoot": str(Path("var/ndr").resolve())}
    env_values.update(dict(v.split("=", 1) for v in values if "=" in v))
    placeholders, names = local_pipeline_names(result.pipelines)
    executor = SubprocessExecutor() if isolated else WarmExecutor()
    sm_spec = next(s for s in result.specs.state_machines() if s.name == state_machine)
    project = result.specs.projects()[sm_spec.model.spec.project].model
    progress = Progress(expected_runs(payload, project.spec.defaults.get("backfill_chunk_windows")), state_machine)
    pipelines = LocalPipelines(generated, names, env_values, echo=lambda m: progress.echo(m, click.echo),
                               executor=executor, progress=progress)
    # there is no real S3 offline: s3://bucket/key is <NDR_LOCAL_S3_ROOT>/bucket/key for the jobs and the machines
    local_s3 = Path(os.environ.setdefault("NDR_LOCAL_S3_ROOT", str(Path("var/ndr/s3").resolve())))
    try:
        with offline_aws(pipelines, wait_time_scale=wait_scale, local_s3_root=local_s3):
            platform = stand_up(generated, project, placeholders)
            run = platform.run(state_machine, payload, timeout_s=timeout)
            events = platform.events()
    finally:
        progress.close()
        executor.close()
    click.echo(f"execution: {run.status}")
    click.echo("path: " + " -> ".join(run.path))
    if run.output is not None:
        click.echo("output: " + json.dumps(run.output, sort_keys=True))
    if run.error:
        click.echo(f"error: {run.error}: {run.cause}")
    for e in events:
        click.echo(f"event: {e['detail-type']} {json.dumps(e['detail'], sort_keys=True)}")
    if run.status != "SUCCEEDED":
        sys.exit(1)


@main.command("demo")
@click.option("--workdir", default="var/demo", type=click.Path(path_type=Path), show_default=True,
              help="Where the local S3, the DuckDB Redshift stand-in and the logs go (replaced on each run).")
@click.option("--specs", "specs_dir", default="specs", type=click.Path(path_type=Path), show_default=True)
@click.option("--generated", default="generated", type=click.Path(path_type=Path), show_default=True)
@click.option("--hosts", default=40, show_default=True, help="Hosts in the synthetic estate.")
@click.option("--seed", default=7, show_default=True)
@click.option("--live-hours", default=1.0, show_default=True, help="Hours of live 15-minute batches (with attacks).")
@click.option("--top", default=10, show_default=True, help="How many top anomalies to print.")
def demo_cmd(workdir: Path, specs_dir: Path, generated: Path, hosts: int, seed: int, live_hours: float,
             top: int) -> None:
    """The whole platform on this machine (make run): synthetic estate -> backfill -> baselines -> training ->
    live batches with attacks -> publication, all driven by the generated state machines."""
    from ndr_local.demo import DemoConfig, DemoError, render, run_demo

    config = DemoConfig(workdir=workdir, specs=specs_dir, generated=generated, hosts=hosts, seed=seed,
                        live_hours=live_hours, top=top)
    try:
        report = run_demo(config, echo=click.echo)
    except DemoError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    render(report, echo=click.echo)
    for failure in report.failures:
        click.echo(f"error: {failure}", err=True)
    click.echo(f"\noutputs: {workdir}/ (see docs/quickstart.md)")
    if not report.ok:
        sys.exit(1)


#: set by the commands whose process may end without the interpreter's teardown (see :func:`entry`)
_hard_exit = False


def _may_hard_exit() -> None:
    global _hard_exit
    _hard_exit = True


def entry() -> None:
    """The ``ndr-compile`` console script: :func:`main`; after ``lint`` and ``compile`` (not ``--deploy``), the
    process ends as soon as its output is flushed, as mypy's does. Tearing the interpreter down (the spec models,
    pydantic and some 200 modules) would cost a fifth of a lint from scratch; those commands hold no thread, child
    process or open file by then. Other commands exit normally."""
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if not _hard_exit:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # `python -m ndr_compiler.cli`, as the console script
    entry()
