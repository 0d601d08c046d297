"""The command line of `python3 -m deployment` (deployment/README.md walks through it)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deployment import ops, spec
from deployment.gcloud import Failed, Gcloud
from deployment.spec import Project

PLACEHOLDER_PROJECT = "my-project"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m deployment", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--project", help="Google Cloud project id (default: gcloud's)")
        sub.add_argument("--region", default=Project.region, help="default: %(default)s")
        if name != "plan":
            sub.add_argument("--dry-run", action="store_true", help="print, run nothing")
        return sub

    command("setup", "once per project: APIs, repository, service accounts and their roles")
    build = command("build", "build an image (base + code) on Cloud Build")
    build.add_argument("image", choices=list(spec.BUILDS))
    build.add_argument("--models", default="", help="a set or ids of the catalog")
    build.add_argument("--catalog", default="", help="your catalog, a file under weights/")
    build.add_argument("--async", dest="wait", action="store_false", help="do not wait")
    build.add_argument(
        "--substitution",
        action="append",
        default=[],
        metavar="_NAME=VALUE",
        help="another substitution of the Cloud Build file (repeatable)",
    )

    for name, text in (
        ("deploy", "deploy a variant's services (prints the plan first)"),
        ("plan", "print every command that deploys a variant on an empty project"),
    ):
        sub = command(name, text)
        sub.add_argument("variant", choices=list(spec.VARIANTS))
        sub.add_argument("--private", action="store_true", help="the page alone calls the backend")
        sub.add_argument("--public-access", choices=ops.PUBLIC_ACCESS, default="allUsers")
        if name == "deploy":
            sub.add_argument("--only", choices=["backend", "frontend"], help="one part only")
            sub.add_argument("--build-id", default="", help="backend build (default: newest)")
            sub.add_argument("--frontend-build-id", default="", help="default: the newest")
    out = command("deliverables", "write deliverables.yaml from what is deployed")
    out.add_argument("--output", type=Path, default=spec.ROOT / "deliverables.yaml")
    return parser


def _project_id(args: argparse.Namespace) -> str:
    found = args.project or os.environ.get("CLOUDSDK_CORE_PROJECT", "")
    if not found and shutil.which("gcloud"):
        answer = subprocess.run(
            ["gcloud", "config", "get-value", "project"],
            capture_output=True,
            text=True,
            check=False,
        )
        found = answer.stdout.strip()
    if found:
        return found
    if args.command == "plan":
        return PLACEHOLDER_PROJECT
    raise Failed("no project: give --project PROJECT_ID (or run: gcloud config set project ID)")


def _plan(gcloud: Gcloud, project: Project, args: argparse.Namespace) -> None:
    """Everything, in order, for a variant on an empty project."""
    variant = spec.VARIANTS[args.variant]
    print("# 1. set up the project (once)", file=gcloud.out)
    ops.setup(gcloud, project)
    print("# 2. build the images", file=gcloud.out)
    ops.build(gcloud, project, "backend_v3" if variant.per_model else variant.backend_image)
    ops.build(gcloud, project, "frontend")
    print(f"# 3. deploy {variant.name}", file=gcloud.out)
    ops.deploy(gcloud, project, variant, private=args.private, public_access=args.public_access)


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = dict(item.partition("=")[::2] for item in items)
    wrong = [name for name in pairs if not name.startswith("_") or not name[1:].isupper()]
    if wrong:
        raise Failed(f"--substitution {wrong[0]}: give _NAME=VALUE, e.g. _PYTHON_IMAGE=...")
    return pairs


def _action(args: argparse.Namespace) -> Callable[[Gcloud, Project], object]:
    if args.command == "setup":
        return ops.setup
    if args.command == "build":
        return lambda g, p: ops.build(
            g,
            p,
            args.image,
            models=args.models,
            catalog=args.catalog,
            wait=args.wait,
            extra=_pairs(args.substitution),
        )
    if args.command == "deploy":
        parts = (args.only,) if args.only else ("backend", "frontend")
        return lambda g, p: ops.deploy(
            g,
            p,
            spec.VARIANTS[args.variant],
            backend_build=args.build_id,
            frontend_build=args.frontend_build_id,
            private=args.private,
            public_access=args.public_access,
            parts=parts,
        )
    if args.command == "deliverables":
        return lambda g, p: sys.stdout.write(ops.deliverables(g, p, args.output))
    return lambda g, p: _plan(g, p, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    again = "python3 -m deployment " + shlex.join(argv)
    try:
        project = Project(_project_id(args), region=args.region)
        action = _action(args)
        if args.command == "plan" or args.dry_run:
            action(Gcloud(project.id, dry_run=True, again=again), project)
            return 0
        if args.command == "deploy":  # what will happen, before anything does
            print("Plan (values read from Google Cloud shown as <...>):")
            action(Gcloud(project.id, dry_run=True, again=again), project)
            print("\nRunning:")
        action(Gcloud(project.id, again=again), project)
    except (Failed, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
