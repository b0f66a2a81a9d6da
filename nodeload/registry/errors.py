"""The registry protocol's errors: an OCI error code, an HTTP status and a message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web


class RegistryError(Exception):
    """An error answered to the client as ``{"errors": [{"code", "message", "detail"}]}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """``code`` is one of the distribution spec's error codes (BLOB_UNKNOWN...).

        ``close``: end the connection after the answer (a request body was left half read).
        """
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail = dict(detail or {})
        self.headers = dict(headers or {})
        self.close = close

    def response(self) -> web.Response:
        """The HTTP response carrying this error."""
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        response = web.json_response(body, status=self.status, headers=self.headers)
        if self.close:
            response.force_close()
        return response


def blob_unknown(digest: str) -> RegistryError:
    """404 BLOB_UNKNOWN."""
    return RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is not on every node")


def manifest_unknown(reference: str) -> RegistryError:
    """404 MANIFEST_UNKNOWN."""
    return RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {reference} is unknown")


def upload_unknown(uuid: str) -> RegistryError:
    """404 BLOB_UPLOAD_UNKNOWN."""
    return RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"upload {uuid} is unknown")


def invalid(code: str, message: str, **detail: Any) -> RegistryError:
    """400 with ``code`` (DIGEST_INVALID, NAME_INVALID, MANIFEST_INVALID, TAG_INVALID...)."""
    return RegistryError(400, code, message, detail=detail)


def too_many(message: str, retry_after: float) -> RegistryError:
    """429 TOOMANYREQUESTS, with the seconds after which a retry may succeed."""
    return RegistryError(
        429, "TOOMANYREQUESTS", message, headers={"Retry-After": str(max(1, round(retry_after)))}
    )
