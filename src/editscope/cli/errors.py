"""The CLI's own error type."""


class CommandError(Exception):
    """A user error found by the CLI itself (bad stream line, conflicting options)."""
