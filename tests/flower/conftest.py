"""The deployment tests need the ``flower`` extra; the toy app is a Flower app project, not tests."""

from __future__ import annotations

import importlib.util

collect_ignore = ["toy_app"]
if importlib.util.find_spec("flwr") is None:  # without lightning-fl[flower] the helpers cannot even be imported
    collect_ignore += ["harness.py", "flower_credentials.py", "flower_processes.py"]
