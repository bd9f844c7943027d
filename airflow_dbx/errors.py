"""Every exception type the package raises, and which API failures are worth another attempt."""

from __future__ import annotations

from typing import Any

# Answers worth another attempt: throttling, server trouble, and a lock held by another request.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_ERROR_CODES = frozenset({"COULD_NOT_ACQUIRE_LOCK"})  # sent with HTTP 400


class DatabricksError(Exception):
    """Base of every error this package raises about Databricks."""


class PayloadError(DatabricksError, ValueError):
    """A payload or argument is not what the API accepts; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidConnectionError(DatabricksError, ValueError):
    """The Airflow connection cannot be turned into a Databricks endpoint and credentials."""


def is_retryable(status: int | None, error_code: str | None) -> bool:
    """Whether a failed request may succeed if sent again (``status`` None: no answer at all)."""
    if status is None:
        return True  # connection refused, dropped or timed out
    return status in RETRYABLE_STATUS or (status == 400 and error_code in RETRYABLE_ERROR_CODES)


class DatabricksApiError(DatabricksError):
    """The API refused a request, or kept failing until the retries ran out."""

    MAX_MESSAGE = 500

    def __init__(
        self,
        *,
        method: str,
        endpoint: str,
        status_code: int | None,
        error_code: str | None = None,
        message: str = "",
        attempts: int = 1,
    ) -> None:
        self.method = method
        self.endpoint = endpoint
        self.status_code = status_code
        self.error_code = error_code
        self.message = _cut(message, self.MAX_MESSAGE)
        self.attempts = attempts
        status = f"HTTP {status_code}" if status_code is not None else "no HTTP answer"
        code = f" {error_code}" if error_code else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} {endpoint} failed{tries}: {status}{code}: {self.message}".rstrip(": "))

    @property
    def retryable(self) -> bool:
        return is_retryable(self.status_code, self.error_code)

    @property
    def throttled(self) -> bool:
        return self.status_code == 429

    def after(self, attempts: int) -> DatabricksApiError:
        """This failure as the final one of ``attempts`` attempts: a plain DatabricksApiError."""
        if type(self) is DatabricksApiError and self.attempts == attempts:
            return self
        return DatabricksApiError(
            method=self.method,
            endpoint=self.endpoint,
            status_code=self.status_code,
            error_code=self.error_code,
            message=self.message,
            attempts=attempts,
        )


class TransientApiError(DatabricksApiError):
    """A failure worth another attempt; ``retry_after`` is the server's requested wait, in seconds."""

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after = retry_after


class DatabricksRunFailed(DatabricksError):
    """A run ended without succeeding; the text is the failure report."""

    def __init__(self, report: str, *, run_id: int, result_state: str | None) -> None:
        self.run_id = run_id
        self.result_state = result_state
        super().__init__(report)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 15] + " ... (cut)"
