"""CLI commands of the service: ``serve`` (the HTTP API and web page over a store) and
``keys add/list/revoke`` (the store's API keys). Errors are one line on stderr, exit code 1."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator, Optional

import typer

from editscope.cli.errors import CommandError
from editscope.store.layout import StoreError

STORE = typer.Option(..., "--store", help="The store directory.")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (StoreError, CommandError, ValueError, OSError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(128)
    return sock


def _serve(store: Path, host: str, port: int, settings: object, device: Optional[str], log_level: str) -> None:
    try:
        import uvicorn

        from editscope.service.app import create_app
        from editscope.service.keys import KeyRing
        from editscope.service.settings import is_loopback
        from editscope.service.worker import EditService
    except ImportError as error:
        raise CommandError(f"serve needs the serve extra (pip install -e '.[serve]'): {error}") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    keys = KeyRing(store)
    try:
        if not is_loopback(host) and not keys.any_active():
            raise CommandError(
                f"refusing to listen on {host} with no API key in the store: anyone who can reach it could edit"
                f" the model. Add a key first (editscope keys add --store {store} --role admin --name NAME)"
                " or listen on 127.0.0.1"
            )
        service = EditService.open(store, device=device)
        try:
            sock = _listening_socket(host, port)
            app = create_app(service, keys, settings)  # type: ignore[arg-type]
            service.start()
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            typer.echo(f"serving store {store} on http://{shown}:{bound} (ctrl-c stops)")
            config = uvicorn.Config(app, log_level=log_level, timeout_keep_alive=5, timeout_graceful_shutdown=10)
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            service.close()
    finally:
        keys.close()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""

    @app.command("serve")
    def serve_command(
        store: Path = STORE,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (anything but loopback needs an API key in the store)."),
        port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port, printed)."),
        max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest request body, in MiB (413 above it)."),
        max_prompt_chars: int = typer.Option(2000, "--max-prompt-chars", help="Longest prompt, target, tag or rephrase (422 above it)."),
        rate_limit: int = typer.Option(600, "--rate-limit", help="Requests per minute per API key (429 above it; 0: no limit)."),
        request_timeout: float = typer.Option(60.0, "--request-timeout", help="Seconds a query or writer operation may wait (504 after), and a client may take to send its request body (408 after)."),
        device: Optional[str] = typer.Option(None, "--device", help="Device for the model (default: the store's)."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level (info logs every request)."),
    ) -> None:
        """Serve the HTTP API (/v1, /docs) and the web page (/) over a store. One writer applies
        edits in journal order; queries run concurrently on the last published state. The
        store stays open for writing (locked) while it runs."""
        with _errors():
            from editscope.service.settings import ServiceSettings

            settings = ServiceSettings(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_prompt_chars=max_prompt_chars,
                                       rate_limit_per_minute=rate_limit, request_timeout_s=request_timeout)
            _serve(store, host, port, settings, device, log_level)

    keys_app = typer.Typer(help="The store's API keys (only their hashes are stored).", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @keys_app.command("add")
    def keys_add(
        store: Path = STORE,
        role: str = typer.Option(..., "--role", help="reader (query, log), editor (plus edits) or admin (plus rollback, revert, snapshot, keys)."),
        name: str = typer.Option(..., "--name", help="Who the key is for (recorded with every write it makes)."),
    ) -> None:
        """Make a key; it is printed once, alone on the last line."""
        from editscope.service.keys import KeyRing

        with _errors():
            ring = KeyRing(store)
            try:
                record, secret = ring.add(name, role)
            finally:
                ring.close()
            typer.echo(f"added key {record.name!r} (role {record.role}, id {record.id}); it is shown only now:")
            typer.echo(secret)

    @keys_app.command("list")
    def keys_list(store: Path = STORE) -> None:
        """Every key: id, name, role, first characters, created, revoked."""
        from editscope.service.keys import KeyRing

        with _errors():
            ring = KeyRing(store)
            try:
                for k in ring.list():
                    revoked = f"revoked {k.revoked_at[:19]}" if k.revoked_at else "active"
                    typer.echo(f"{k.id:>4}  {k.name:<20}  {k.role:<7}  {k.prefix}…  created {k.created_at[:19]}  {revoked}")
            finally:
                ring.close()

    @keys_app.command("revoke")
    def keys_revoke(store: Path = STORE, name: str = typer.Option(..., "--name", help="The key's name.")) -> None:
        """Revoke a key; a running server refuses it from its next request."""
        from editscope.service.keys import KeyRing

        with _errors():
            ring = KeyRing(store)
            try:
                record = ring.revoke(name)
            finally:
                ring.close()
            typer.echo(f"revoked key {record.name!r} (id {record.id})")
