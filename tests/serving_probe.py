"""The production backend (`python -m backend`), plus a hook: at exit, it lists the modules it
loaded. For tests/test_serving.py, which checks the serving process never imports torch & co."""

import json
import os
import sys

from backend.__main__ import main


def _list_modules() -> None:
    with open(os.environ["MODULES_FILE"], "w") as out:
        json.dump(sorted(sys.modules), out)


if __name__ == "__main__":
    main(before_exit=_list_modules)
