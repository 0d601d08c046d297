"""python3 -m deployment: set up a project, build the images, deploy a variant, or print the plan.

Nothing is run before it is printed; `plan` and `--dry-run` print without running. Needs only
Python 3.11+ and gcloud: none of the project's own environment.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036  (the check is for a user's older python3)
    sys.exit(
        f"error: python3 -m deployment needs Python 3.11 or newer; {sys.executable} is "
        f"{sys.version.split()[0]}. Run it with a newer python3 (e.g. python3.12 -m deployment)."
    )

from deployment.cli import main

sys.exit(main())
