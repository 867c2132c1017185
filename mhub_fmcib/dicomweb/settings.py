"""Settings of a DICOMweb connection, and where its credentials come from.

Credentials are read once, at the edge (the command line), from an explicit environment
mapping and files; nothing below reads the environment. Their ``repr`` and ``str`` show
``'***'`` in place of secrets, and :meth:`DicomWebSettings.to_json` (what goes to
``run.json``) holds no secret and no user name.

Credentials file format (``--credentials FILE``): one line ``username:password``. The
user name ends at the first colon, so the password may hold colons; surrounding
whitespace and the line end are stripped; blank lines and lines starting with ``#`` are
ignored. Exactly one such line must remain. Keep the file private (``chmod 600``); a file
readable by group or others draws a warning.

Token file format (``--token-file FILE``): the bearer token on one line, nothing else.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mhub_fmcib.dicomweb.errors import DicomWebOptionError

logger = logging.getLogger(__name__)

ENV_USERNAME = "DICOMWEB_USERNAME"
ENV_PASSWORD = "DICOMWEB_PASSWORD"
#: Command-line option that sets :attr:`DicomWebSettings.cache_limit_bytes` (named in errors).
CACHE_LIMIT_OPTION = "--cache-limit-mb"
#: Command-line option that sets :attr:`DicomWebSettings.study_timeout_s` (named in errors).
DEADLINE_OPTION = "--dicomweb-timeout"
DEFAULT_STUDY_TIMEOUT_S = 600.0
DEFAULT_CACHE_LIMIT_BYTES = 20 * 1024**3
_REDACTED = "'***'"


def _masked(value: str | None) -> str:
    return "None" if value is None else _REDACTED


@dataclass(frozen=True, repr=False)
class Credentials:
    """Basic-auth user and password, or a bearer token, or nothing (anonymous)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            missing = ENV_PASSWORD if self.password is None else ENV_USERNAME
            raise DicomWebOptionError(
                f"Basic authentication needs both a user name and a password; {missing} "
                "(or its part of the credentials file) is missing"
            )
        if self.token is not None and self.username is not None:
            raise DicomWebOptionError(
                "Both a bearer token (--token-file) and basic-auth credentials were given; choose one"
            )
        for name, value in (("user name", self.username), ("token", self.token)):
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise DicomWebOptionError(f"The DICOMweb {name} is empty or holds whitespace")

    def __repr__(self) -> str:
        user = "None" if self.username is None else repr(self.username)
        return f"Credentials(username={user}, password={_masked(self.password)}, token={_masked(self.token)})"

    __str__ = __repr__

    @property
    def kind(self) -> str:
        """``'basic'``, ``'bearer'`` or ``'none'``."""
        if self.token is not None:
            return "bearer"
        return "basic" if self.username is not None else "none"


def _read_private_file(path: Path, what: str) -> list[str]:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DicomWebOptionError(f"Cannot read the {what} {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("The %s %s is readable by group or others; run chmod 600 on it", what, path)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def credentials_from(env: Mapping[str, str], credentials_file: Path | None, token_file: Path | None) -> Credentials:
    """Credentials from a token file, else a credentials file, else the environment.

    Args:
        env: the environment (pass ``os.environ`` at the command line); only
            ``DICOMWEB_USERNAME`` and ``DICOMWEB_PASSWORD`` are looked at.
        credentials_file: a ``username:password`` file (format in the module docstring);
            it takes precedence over the environment.
        token_file: a file holding a bearer token; cannot be combined with basic auth
            from a credentials file.

    Raises:
        DicomWebOptionError: a file is unreadable or malformed, only one of user name and
            password is set, or a token and basic-auth credentials are both given. The
            message never holds a secret.
    """
    if token_file is not None:
        if credentials_file is not None:
            raise DicomWebOptionError("Give --token-file or --credentials, not both")
        lines = _read_private_file(token_file, "token file")
        if len(lines) != 1:
            raise DicomWebOptionError(
                f"The token file {token_file} must hold the token on exactly one line; "
                f"found {len(lines)} non-empty lines"
            )
        return Credentials(token=lines[0])
    if credentials_file is not None:
        lines = _read_private_file(credentials_file, "credentials file")
        if len(lines) != 1 or ":" not in lines[0]:
            raise DicomWebOptionError(
                f"The credentials file {credentials_file} must hold exactly one line "
                f"'username:password'; found {len(lines)} non-empty lines"
                + ("" if len(lines) != 1 else " and no ':' in it")
            )
        username, password = lines[0].split(":", 1)
        return Credentials(username=username.strip(), password=password)
    return Credentials(username=env.get(ENV_USERNAME) or None, password=env.get(ENV_PASSWORD) or None)


@dataclass(frozen=True, repr=False)
class DicomWebSettings:
    """How to reach a DICOMweb server.

    Attributes:
        url: DICOMweb root, e.g. ``https://pacs.example.org/dicom-web``; http or https,
            with no user name, password, query or fragment in it.
        username, password: basic authentication (both or neither).
        token: bearer token (instead of basic authentication).
        ca_bundle: PEM file of the CA certificates to trust instead of the system's.
        verify_tls: verify the server's TLS certificate (default; turn off only for tests).
        timeout_s: seconds to wait for the server to connect or to send the next bytes
            (per socket operation of each request).
        study_timeout_s: deadline in wall-clock seconds for the transfers of one study:
            its planning and pull together, and again its store; a study that takes
            longer fails (``DicomWebDeadlineError``) and the run goes on. Bounds a server
            that trickles data too slowly for ``timeout_s`` ever to trip.
        retries: how many times a request is retried on connection errors, HTTP 429 and
            5xx, with exponential back-off; ``Retry-After`` is respected.
        backoff_s: back-off factor in seconds: waits are 0, 2*b, 4*b, ... between retries.
        cache_dir: where pulled studies are written (default: a folder in the output).
        cache_limit_bytes: the most bytes the cache may hold.
    """

    url: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: Path | None = None
    verify_tls: bool = True
    timeout_s: float = 60.0
    study_timeout_s: float = DEFAULT_STUDY_TIMEOUT_S
    retries: int = 5
    backoff_s: float = 1.0
    cache_dir: Path | None = None
    cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            raise DicomWebOptionError(
                "The DICOMweb URL must not hold a user name or password; use "
                f"{ENV_USERNAME}/{ENV_PASSWORD}, --credentials FILE or --token-file FILE"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DicomWebOptionError(
                f"The DICOMweb URL {self.url!r} is not an http(s) URL with a host; "
                "give e.g. https://pacs.example.org/dicom-web"
            )
        if parts.query or parts.fragment:
            raise DicomWebOptionError(f"The DICOMweb URL {self.url!r} must not have a query or fragment")
        Credentials(self.username, self.password, self.token)  # same checks
        self._check_numbers()
        if parts.scheme == "http" and self.auth_kind != "none":
            if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
                logger.warning("Credentials will be sent without TLS to %s; use https://", self.server)

    def _check_numbers(self) -> None:
        """CA bundle, timeouts, retries and the cache limit."""
        if self.ca_bundle is not None:
            if not self.verify_tls:
                raise DicomWebOptionError("A CA bundle was given but TLS verification is off")
            if not self.ca_bundle.is_file():
                raise DicomWebOptionError(f"The CA bundle {self.ca_bundle} does not exist")
        if not self.timeout_s > 0:
            raise DicomWebOptionError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if not self.study_timeout_s > 0:
            raise DicomWebOptionError(
                f"The per-study deadline must be > 0 seconds, got {self.study_timeout_s}; set {DEADLINE_OPTION}"
            )
        if self.retries < 0 or self.backoff_s < 0:
            raise DicomWebOptionError(f"retries and backoff_s must be >= 0, got {self.retries} and {self.backoff_s}")
        if self.cache_limit_bytes <= 0:
            raise DicomWebOptionError(
                f"The cache limit must be > 0 bytes, got {self.cache_limit_bytes}; set {CACHE_LIMIT_OPTION}"
            )

    @classmethod
    def with_credentials(cls, url: str, credentials: Credentials, **options: Any) -> DicomWebSettings:
        """Settings for ``url`` with ``credentials`` (from :func:`credentials_from`)."""
        return cls(
            url=url,
            username=credentials.username,
            password=credentials.password,
            token=credentials.token,
            **options,
        )

    @property
    def auth_kind(self) -> str:
        """``'basic'``, ``'bearer'`` or ``'none'``."""
        return Credentials(self.username, self.password, self.token).kind

    @property
    def server(self) -> str:
        """``scheme://host:port`` of the server: safe for logs and messages."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{parts.hostname}:{port}"

    def __repr__(self) -> str:
        user = "None" if self.username is None else repr(self.username)
        return (
            f"DicomWebSettings(url={self.url!r}, username={user}, "
            f"password={_masked(self.password)}, token={_masked(self.token)}, "
            f"ca_bundle={self.ca_bundle!r}, verify_tls={self.verify_tls}, "
            f"timeout_s={self.timeout_s}, study_timeout_s={self.study_timeout_s}, "
            f"retries={self.retries}, backoff_s={self.backoff_s}, "
            f"cache_dir={self.cache_dir!r}, cache_limit_bytes={self.cache_limit_bytes})"
        )

    __str__ = __repr__

    def to_json(self) -> dict[str, object]:
        """What may go to ``run.json``: no secret, no user name."""
        return {
            "url": self.url,
            "auth": self.auth_kind,
            "ca_bundle": None if self.ca_bundle is None else str(self.ca_bundle),
            "verify_tls": self.verify_tls,
            "timeout_s": self.timeout_s,
            "study_timeout_s": self.study_timeout_s,
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "cache_limit_bytes": self.cache_limit_bytes,
        }
