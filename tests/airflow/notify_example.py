"""A failure notifier as an operator would write one (docs/operations.md): ``VTAG_ON_FAILURE=
notify_example:record`` with this file in the DAGs folder (or anywhere on the workers' path). This
one appends the failure to ``$VTAG_NOTIFY_FILE`` as a JSON line; a real one posts to chat or mail."""

from __future__ import annotations

import json
import os

NOT_CALLABLE = 42


def record(context) -> None:
    ti = context.get("task_instance") or context.get("ti")
    entry = {"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
             "run_id": context.get("run_id"), "exception": str(context.get("exception"))}
    with open(os.environ.get("VTAG_NOTIFY_FILE", "vtag-failures.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
