"""The domain's error tree. Each error carries the hints a boundary needs to answer the peer."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain and services raise on purpose.

    `smtp_code`/`smtp_enhanced` say how an SMTP boundary answers; `http_status` how the API does.
    """

    smtp_code: int = 451
    smtp_enhanced: str = "4.3.0"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    smtp_code = 550
    smtp_enhanced = "5.1.1"
    http_status = 404


class AlreadyExists(DomainError):
    smtp_code = 550
    smtp_enhanced = "5.1.0"
    http_status = 409


class Conflict(DomainError):
    """The request conflicts with the resource's current state (the text says what to do)."""

    smtp_code = 550
    smtp_enhanced = "5.0.0"
    http_status = 409


class InvalidAddress(DomainError):
    smtp_code = 501
    smtp_enhanced = "5.1.3"
    http_status = 422


class StorageError(DomainError):
    """Raised by storage adapters: the operation did not commit; nothing was acknowledged."""

    smtp_code = 451
    smtp_enhanced = "4.3.0"
    http_status = 503


class ConfigError(DomainError):
    """A configuration file or value is wrong; the text names the key (and line when known)."""

    http_status = 500
