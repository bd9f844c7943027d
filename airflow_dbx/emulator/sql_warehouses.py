"""The SQL Warehouses API (2.0) of the emulator: warehouses that start, run, stop and are deleted.

A warehouse is STARTING for ``start_seconds`` (times the emulator's ``time_scale``) after a
start, a create or a statement sent to it while STOPPED, then RUNNING; a stop makes it
STOPPING for ``stop_seconds``, then STOPPED. States advance when read, from the clock.
One warehouse, ``Starter Warehouse`` (id :data:`DEFAULT_WAREHOUSE_ID`), exists from the start,
RUNNING.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.errors import ApiError, invalid

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_WAREHOUSE_ID = "a1b2c3d4e5f60718"
DEFAULT_WAREHOUSE_NAME = "Starter Warehouse"
CLUSTER_SIZES = ("2X-Small", "X-Small", "Small", "Medium", "Large", "X-Large", "2X-Large", "3X-Large", "4X-Large")
_EDITABLE = (
    "name", "cluster_size", "min_num_clusters", "max_num_clusters", "auto_stop_mins", "enable_photon",
    "enable_serverless_compute", "warehouse_type", "spot_instance_policy", "tags", "channel",
)


@dataclass
class Warehouse:
    id: str
    settings: dict[str, Any]
    creator_name: str
    state: str = "STOPPED"
    until: float = 0.0  # when STARTING or STOPPING ends
    starts: int = 0
    stops: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)

    def view(self, host: str) -> dict[str, Any]:
        path = f"/sql/1.0/warehouses/{self.id}"
        return {
            "id": self.id,
            **self.settings,
            "creator_name": self.creator_name,
            "state": self.state,
            "num_clusters": 1 if self.state == "RUNNING" else 0,
            "num_active_sessions": 0,
            "health": {"status": "HEALTHY"},
            "odbc_params": {"hostname": host, "path": path, "protocol": "https", "port": 443},
            "jdbc_url": f"jdbc:databricks://{host}:443/default;transportMode=http;ssl=1;AuthMech=3;httpPath={path};",
        }


class Warehouses:
    """Every warehouse of the workspace; callers hold the emulator's lock."""

    def __init__(self, clock: Callable[[], float], time_scale: float) -> None:
        self.clock = clock
        self.time_scale = time_scale
        self.start_seconds = 2.0
        self.stop_seconds = 1.0
        self.reset()

    def reset(self) -> None:
        self.items: dict[str, Warehouse] = {}
        default = self._add(DEFAULT_WAREHOUSE_ID, {"name": DEFAULT_WAREHOUSE_NAME}, "emulator-user@example.com")
        default.state = "RUNNING"

    # ------------------------------------------------------------------ life cycle

    def advance(self, warehouse: Warehouse) -> Warehouse:
        now = self.clock()
        if warehouse.state in ("STARTING", "STOPPING") and now >= warehouse.until:
            self._set(warehouse, "RUNNING" if warehouse.state == "STARTING" else "STOPPED", now)
        return warehouse

    def ensure_started(self, warehouse: Warehouse) -> None:
        """Start ``warehouse`` unless it runs or is starting (a statement sent to it does this)."""
        self.advance(warehouse)
        if warehouse.state in ("STOPPED", "STOPPING"):
            now = self.clock()
            warehouse.starts += 1
            warehouse.until = now + self.start_seconds * self.time_scale
            self._set(warehouse, "STARTING", now)

    def ready_at(self, warehouse: Warehouse, now: float) -> float | None:
        """When the warehouse runs (``now`` or later); None if it is not on its way to running."""
        self.advance(warehouse)
        if warehouse.state == "RUNNING":
            return now
        return warehouse.until if warehouse.state == "STARTING" else None

    def _set(self, warehouse: Warehouse, state: str, now: float) -> None:
        warehouse.state = state
        warehouse.events.append((now, state))

    # ------------------------------------------------------------------ API

    def get(self, warehouse_id: str) -> Warehouse:
        warehouse = self.items.get(warehouse_id)
        if warehouse is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {warehouse_id} does not exist.")
        return self.advance(warehouse)

    def by_name(self, name: str) -> Warehouse | None:
        return next((w for w in self.items.values() if w.settings.get("name") == name), None)

    def create(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        settings = _settings(body, creating=True)
        if self.by_name(settings["name"]) is not None:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"A warehouse named {settings['name']!r} already exists.")
        warehouse = self._add(secrets.token_hex(8), settings, user)
        self.ensure_started(warehouse)
        return {"id": warehouse.id}

    def edit(self, warehouse_id: str, body: dict[str, Any]) -> dict[str, Any]:
        warehouse = self.get(warehouse_id)
        warehouse.settings.update(_settings(body, creating=False))
        return {}

    def delete(self, warehouse_id: str) -> dict[str, Any]:
        self.get(warehouse_id)
        del self.items[warehouse_id]
        return {}

    def start(self, warehouse_id: str) -> dict[str, Any]:
        self.ensure_started(self.get(warehouse_id))
        return {}

    def stop(self, warehouse_id: str) -> dict[str, Any]:
        warehouse = self.get(warehouse_id)
        if warehouse.state in ("RUNNING", "STARTING"):
            now = self.clock()
            warehouse.stops += 1
            warehouse.until = now + self.stop_seconds * self.time_scale
            self._set(warehouse, "STOPPING", now)
        return {}

    def _add(self, warehouse_id: str, settings: dict[str, Any], user: str) -> Warehouse:
        defaults = {"cluster_size": "2X-Small", "min_num_clusters": 1, "max_num_clusters": 1, "auto_stop_mins": 10}
        warehouse = Warehouse(warehouse_id, {**defaults, **settings}, user)
        self.items[warehouse_id] = warehouse
        return warehouse


def _settings(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The editable fields of a create or edit body, checked as the API checks them."""
    settings = {key: body[key] for key in _EDITABLE if key in body}
    name = settings.get("name")
    if (creating or "name" in settings) and (not isinstance(name, str) or not name.strip()):
        raise invalid("name", "a warehouse needs a non-empty name")
    size = settings.get("cluster_size")
    if size is not None and size not in CLUSTER_SIZES:
        raise invalid("cluster_size", f"must be one of {', '.join(CLUSTER_SIZES)}, got {size!r}")
    for key in ("min_num_clusters", "max_num_clusters", "auto_stop_mins"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise invalid(key, f"must be a non-negative integer, got {value!r}")
    return settings
