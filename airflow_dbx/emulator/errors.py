"""The error the emulator answers with: a status and the Jobs API's ``{"error_code", "message"}`` body."""

from __future__ import annotations

from typing import Any

DEFAULT_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "METHOD_NOT_ALLOWED",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """Raised anywhere below a handler; the app turns it into a JSON error response."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}


def invalid(field: str, problem: str) -> ApiError:
    """A 400 INVALID_PARAMETER_VALUE whose message names the field."""
    return ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid value for '{field}': {problem}")


def missing(kind: str, ident: int | None) -> ApiError:
    """An unknown job or run id: Databricks answers 400 INVALID_PARAMETER_VALUE, not 404.

    The messages are the ones the Databricks SDK's error overrides match ("Job .* does not
    exist", "Run .* does not exist") to raise its ResourceDoesNotExist.
    """
    return ApiError(400, "INVALID_PARAMETER_VALUE", f"{kind} {ident} does not exist.")


def invalid_state(message: str) -> ApiError:
    return ApiError(400, "INVALID_STATE", message)
