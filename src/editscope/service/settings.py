"""The service's limits and options, as one frozen dataclass validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServiceSettings:
    """How ``editscope serve`` limits its clients.

    - ``max_upload_bytes``: the largest request body (``413`` above it).
    - ``max_prompt_chars``: the longest prompt, target, rephrase or tag (``422`` above it).
    - ``rate_limit_per_minute``: requests per API key (or per client address, with no keys) in
      any 60 seconds (``429`` above it); ``0`` turns the limit off.
    - ``request_timeout_s``: how long a request waits for a query or for the writer (rollback,
      revert, snapshot, audit) before it gets ``504``.
    - ``max_new_tokens``: the longest answer a query generates.
    - ``page_size_max``: the most log entries one page of ``GET /v1/edits`` returns.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_prompt_chars: int = 2000
    rate_limit_per_minute: int = 600
    request_timeout_s: float = 60.0
    max_new_tokens: int = 16
    page_size_max: int = 500

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_prompt_chars", "max_new_tokens", "page_size_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServiceSettings.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.rate_limit_per_minute, int) or self.rate_limit_per_minute < 0:
            raise ValueError(
                f"ServiceSettings.rate_limit_per_minute must be >= 0 (0: no limit), got {self.rate_limit_per_minute!r}"
            )
        if not self.request_timeout_s > 0:
            raise ValueError(f"ServiceSettings.request_timeout_s must be > 0, got {self.request_timeout_s!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")
