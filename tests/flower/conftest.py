from __future__ import annotations

import sys
import warnings
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "scripts" / "flower_app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

# flwr 1.42 imports typer, which uses click APIs click 8.2 deprecates: a warning of theirs, not ours
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import flwr.app
    import flwr.serverapp
    import flwr.simulation  # noqa: F401
