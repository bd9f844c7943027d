"""``retry_args`` as plain JSON, so that tenacity objects cross Airflow's serialization to a trigger.

A deferred task's trigger is stored as JSON; ``stop_after_attempt(5)`` would arrive there as
the text of its repr. :func:`encode` describes each tenacity strategy by its class and
constructor arguments (composites such as ``stop_a | stop_b`` by their parts, exception
types by import path); :func:`decode` builds them again in the triggerer. A value with no
such description (a lambda, a custom callback) is refused when the task is defined.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from airflow_dbx.errors import PayloadError

log = logging.getLogger(__name__)

_KIND = "__retry_arg__"
# Constructor arguments stored under another attribute name.
_ATTRIBUTE = {("wait_fixed", "wait"): "wait_fixed", ("wait_random", "min"): "wait_random_min",
              ("wait_random", "max"): "wait_random_max"}
# Composites built from *args, and the attribute that keeps them.
_PARTS = {"stop_any": "stops", "stop_all": "stops", "wait_combine": "wait_funcs", "wait_chain": "strategies"}
_PLAIN = (str, int, float, bool, type(None))


def encode(retry_args: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``retry_args`` as JSON; PayloadError naming ``field[key]`` for a value that cannot be described."""
    return {key: _encode(value, f"{field}[{key!r}]") for key, value in retry_args.items()}


def decode(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The tenacity arguments :func:`encode` described; values that were never encoded pass as they are."""
    if spec is None:
        return None
    out = {}
    for key, value in spec.items():
        if isinstance(value, str):
            # A trigger stored by a version that did not encode: its objects became their repr.
            log.warning("retry_args[%r] cannot be rebuilt from %r; the default policy applies to it", key, value)
            continue
        out[key] = _decode(value)
    return out


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, _PLAIN) and not isinstance(value, str):
        return value
    if isinstance(value, type) and issubclass(value, BaseException):
        return {_KIND: "exception", "path": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, tuple) and value and all(isinstance(v, type) for v in value):
        return {_KIND: "tuple", "items": [_encode(v, where) for v in value]}
    cls = type(value)
    if cls.__module__.split(".")[0] != "tenacity":
        raise PayloadError(where, _refusal(value))
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__name__ in _PARTS:
        parts = getattr(value, _PARTS[cls.__name__])
        return {_KIND: "tenacity", "path": path, "args": [_encode(p, where) for p in parts]}
    kwargs = {}
    for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        attribute = _ATTRIBUTE.get((cls.__name__, name), name)
        if not hasattr(value, attribute):
            raise PayloadError(where, _refusal(value))
        kwargs[name] = _encode(getattr(value, attribute), where)
    return {_KIND: "tenacity", "path": path, "kwargs": kwargs}


def _refusal(value: Any) -> str:
    return (
        f"{value!r} cannot reach the triggerer of a deferrable task: use tenacity's stop_*, wait_* and "
        "retry_if_(not_)exception_type strategies, plain values, or deferrable=False"
    )


def _decode(value: Any) -> Any:
    if not isinstance(value, Mapping) or _KIND not in value:
        return value
    if value[_KIND] == "tuple":
        return tuple(_decode(item) for item in value["items"])
    target = _resolve(value["path"], exception=value[_KIND] == "exception")
    if value[_KIND] == "exception":
        return target
    args = [_decode(item) for item in value.get("args", ())]
    return target(*args, **{key: _decode(item) for key, item in value.get("kwargs", {}).items()})


def _resolve(path: str, *, exception: bool) -> Any:
    module, _, name = path.partition(":")
    if not exception and module.split(".")[0] != "tenacity":
        raise PayloadError("retry_args", f"{path} is not a tenacity strategy")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if exception and not (isinstance(target, type) and issubclass(target, BaseException)):
        raise PayloadError("retry_args", f"{path} is not an exception type")
    return target
