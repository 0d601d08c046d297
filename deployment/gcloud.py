"""Run gcloud commands, or only print them: the same code is the plan and the deployment.

Every command is printed before it runs, as a line that can be pasted into a shell. With
`dry_run`, nothing runs: a command that only reads (a URL, the newest build) answers with a
placeholder such as `<url of backend-v1>`, so the rest of the plan can still be shown.
A failing command stops everything (`Failed`) with its error and the command that fixes it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TextIO


class Failed(Exception):
    """A command failed; the message has its error and what fixes it."""


# (pattern of gcloud's error, what fixes it). The first match wins.
FIXES = [
    (
        r"not belong to a permitted customer|constraints/iam\.allowedPolicyMemberDomains",
        "the organisation forbids allUsers. Let anyone in without it, with Cloud Run's invoker "
        "check off: {again} --public-access no-iam-check",
    ),
    (
        r"SERVICE_DISABLED|has not been used in project|API .* (is not enabled|has not been)",
        "an API is off: python3 -m deployment setup --project {project}",
    ),
    (
        r"iam\.serviceAccounts\.actAs|serviceAccountUser",
        "you may not act as that service account: python3 -m deployment setup --project "
        "{project} grants it (roles/iam.serviceAccountUser), or ask an owner to run it",
    ),
    (
        r"[Qq]uota|RESOURCE_EXHAUSTED",
        "a quota is used up: lower MAX_INSTANCES or the sizes in deployment/spec.py, or ask "
        "for more at https://console.cloud.google.com/iam-admin/quotas?project={project}",
    ),
    (
        r"PERMISSION_DENIED|does not have permission|403",
        "your account lacks a role: ask an owner of {project} to run "
        "python3 -m deployment setup --project {project}, or to grant the role named above",
    ),
    (
        r"not currently have an active account|gcloud auth login|Reauthentication",
        "log in first: gcloud auth login",
    ),
]


def shell_line(args: list[str]) -> str:
    return shlex.join(args)


@dataclass
class Gcloud:
    project: str
    dry_run: bool = False
    again: str = "python3 -m deployment"  # the user's command, for fixes that repeat it
    out: TextIO = field(default_factory=lambda: sys.stdout)
    executable: str = "gcloud"
    ran: list[list[str]] = field(default_factory=list)

    # Each takes the command as one line split at spaces (ids and flags have none), then any
    # arguments that may hold a space, as they are.
    def change(self, line: str, *more: str) -> None:
        """Run a command that changes something (print it first)."""
        args = (*line.split(), *more)
        self._show(args)
        if not self.dry_run:
            self._run(args, capture=False)

    def read(self, line: str, *more: str, placeholder: str) -> str:
        """The output of a command that only reads (with dry_run: the placeholder)."""
        args = (*line.split(), *more)
        self._show(args, note="read")
        if self.dry_run:
            return placeholder
        return self._run(args, capture=True).strip()

    def exists(self, line: str) -> bool:
        """Whether a describe command finds its resource (dry run: no, to show the creation)."""
        args = tuple(line.split())
        self._show(args, note="does it exist?")
        if self.dry_run:
            return False
        result = subprocess.run(
            [self.executable, *args], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            return True
        if re.search(r"NOT_FOUND|not found|does not exist|404", result.stderr):
            return False
        raise self._failure(args, result.stderr)

    def _show(self, args: tuple[str, ...], note: str = "") -> None:
        line = shell_line(["gcloud", *args])
        print(f"{line}  # {note}" if note else line, file=self.out, flush=True)

    def _run(self, args: tuple[str, ...], *, capture: bool) -> str:
        self.ran.append(list(args))
        result = subprocess.run(
            [self.executable, *args],
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if not capture and result.stderr:
            sys.stderr.write(result.stderr)
        if result.returncode != 0:
            raise self._failure(args, result.stderr)
        return result.stdout or ""

    def _failure(self, args: tuple[str, ...], stderr: str) -> Failed:
        error = stderr.strip() or "(no error message)"
        for pattern, fix in FIXES:
            if re.search(pattern, stderr):
                hint = fix.format(project=self.project, again=self.again)
                break
        else:
            hint = "read gcloud's error above; nothing after this command has run"
        return Failed(f"failed: {shell_line(['gcloud', *args])}\n{error}\nto fix: {hint}")
