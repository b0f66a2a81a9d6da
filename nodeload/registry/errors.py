"""The registry protocol's errors: an OCI error code, an HTTP status and a message."""

from __future__ import annotations

from aiohttp import web


class RegistryError(Exception):
    """An error answered to the client as ``{"errors": [{"code", "message"}]}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """``code`` is one of the distribution spec's error codes (BLOB_UNKNOWN...)."""
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        """The HTTP response carrying this error."""
        body = {"errors": [{"code": self.code, "message": self.message, "detail": {}}]}
        return web.json_response(body, status=self.status)


def blob_unknown(digest: str) -> RegistryError:
    """404 BLOB_UNKNOWN."""
    return RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} is not on every node")


def manifest_unknown(reference: str) -> RegistryError:
    """404 MANIFEST_UNKNOWN."""
    return RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {reference} is unknown")


def upload_unknown(uuid: str) -> RegistryError:
    """404 BLOB_UPLOAD_UNKNOWN."""
    return RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"upload {uuid} is unknown")


def invalid(code: str, message: str) -> RegistryError:
    """400 with ``code`` (DIGEST_INVALID, NAME_INVALID, MANIFEST_INVALID, TAG_INVALID...)."""
    return RegistryError(400, code, message)
