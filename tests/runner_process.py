"""Running ``python -m orchard.runners.serve`` the way a model's environment would: with the
server side's dependencies and modules unimportable (the environment does not have them)."""

from __future__ import annotations

import sys

BANNED = ("sqlalchemy", "alembic", "click", "rich", "aiohttp", "starlette", "uvicorn")
BANNED_ORCHARD = (
    "orchard.client",
    "orchard.server",
    "orchard.services",
    "orchard.store",
    "orchard.cli",
    "orchard.dispatch",
)

# Installs an import hook refusing the banned modules, then runs ``MODULE ARGS...`` as
# ``python -m`` would, or ``-c CODE``.
LAUNCHER = f"""
import runpy, sys

class Ban:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BANNED!r} or name.startswith({BANNED_ORCHARD!r}):
            raise ImportError(f"the runner imported {{name}}, which a model's environment lacks")
        return None

sys.meta_path.insert(0, Ban())
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    module = sys.argv.pop(1)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def banned_imports_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` (or ``python -c CODE`` when ``module`` is ``-c``) with the
    banned imports refused."""
    return [sys.executable, "-c", LAUNCHER, module, *args]
