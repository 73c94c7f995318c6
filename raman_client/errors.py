"""Errors raised by the client: the server's problem documents, and transport failures."""

from __future__ import annotations

from typing import Any


class RamanError(Exception):
    """Base of every error this package raises."""


class RamanAPIError(RamanError):
    """The server answered with an error: the fields of its RFC 9457 problem document.

    `extensions` holds any further members (for example `files` on an all-files-failed 422,
    `errors` on a validation 422). `retry_after` is the server's Retry-After in seconds, if any.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type: str = "about:blank",
        instance: str = "",
        extensions: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.extensions = extensions or {}
        self.retry_after = retry_after

    @property
    def slug(self) -> str:
        """The last part of the problem type (`urn:raman:problem:not-found` -> `not-found`)."""
        return self.type.rsplit(":", 1)[-1].rsplit("/", 1)[-1]

    @classmethod
    def from_body(
        cls, status: int, body: Any, reason: str = "", retry_after: float | None = None
    ) -> RamanAPIError:
        """Build from a decoded response body (a problem document, or anything else)."""
        if not isinstance(body, dict):
            text = str(body).strip()[:500] if body else ""
            return cls(status, reason or "HTTP error", text or reason or f"HTTP {status}",
                       retry_after=retry_after)  # fmt: skip
        known = {"type", "title", "status", "detail", "instance"}
        return cls(
            status=int(body.get("status", status)),
            title=str(body.get("title", reason or "HTTP error")),
            detail=str(body.get("detail", body.get("error", ""))),
            type=str(body.get("type", "about:blank")),
            instance=str(body.get("instance", "")),
            extensions={k: v for k, v in body.items() if k not in known},
            retry_after=retry_after,
        )


class RamanConnectionError(RamanError):
    """The server could not be reached (or did not answer in time) after every retry."""


class JobFailed(RamanError):
    """A fine-tune job ended in a state other than success (`wait(..., raise_on_failure=True)`)."""

    def __init__(self, job: Any) -> None:
        super().__init__(
            f"fine-tune job {job.id} ended {job.state}: {job.error or 'no reason given'}"
        )
        self.job = job
