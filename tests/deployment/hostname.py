"""``[core] hostname_callable`` for the Celery deployment: its two workers and two triggerers share
one machine, so each names itself (``AIRFLOW_DBX_HOSTNAME``, set by the harness) in the
``hostname`` of its jobs and task instances, and a test can tell which one ran what."""

from __future__ import annotations

import os
import socket


def component_name() -> str:
    return os.environ.get("AIRFLOW_DBX_HOSTNAME") or socket.getfqdn()
