"""`mailprime init`: a data directory with config, database, TLS certificate and a first account."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import tomli_w
import typer

from mailprime.cli.context import console, fail, opened_store
from mailprime.cli.selfsigned import write_self_signed
from mailprime.config import load_settings
from mailprime.domain.address import normalize_domain
from mailprime.domain.errors import InvalidAddress
from mailprime.services.passwords import generate_password, hash_password
from mailprime.services.verp_key import ensure_secret_file


def init(
    dir_: Annotated[Path, typer.Option("--dir", help="Data directory to create.")] = Path("var"),
    domain: Annotated[str, typer.Option(help="First local domain.")] = "example.test",
    hostname: Annotated[str, typer.Option(
        help="This server's host name (HELO, banners, TLS).")] = "localhost",
    sandbox: Annotated[bool, typer.Option(
        "--sandbox/--no-sandbox",
        help="Capture outbound mail locally instead of sending it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing configuration.")] = False,
) -> None:
    """Create DIR/mailprime.toml, the SQLite database, a self-signed certificate and postmaster@DOMAIN."""
    try:
        domain = normalize_domain(domain)
    except InvalidAddress as exc:
        fail(f"--domain: {exc.message}", 2)
    config_path = dir_ / "mailprime.toml"
    if config_path.exists() and not force:
        fail(f"{config_path} already exists; use --force to overwrite it", 1)
    dir_.mkdir(parents=True, exist_ok=True)
    document = {
        "server": {"hostname": hostname, "data_dir": "."},
        "delivery": {"sandbox": sandbox, "mx_port": 25},
        "listeners": [
            {"name": "mx", "role": "mx", "address": "127.0.0.1", "port": 2525, "tls": "starttls"},
            {"name": "submission", "role": "submission", "address": "127.0.0.1", "port": 2587,
             "tls": "starttls"},
            {"name": "submissions", "role": "submission", "address": "127.0.0.1", "port": 2465,
             "tls": "implicit"},
            {"name": "imap", "role": "imap", "address": "127.0.0.1", "port": 2143, "tls": "starttls"},
            {"name": "imaps", "role": "imap", "address": "127.0.0.1", "port": 2993, "tls": "implicit"},
            {"name": "pop3", "role": "pop3", "address": "127.0.0.1", "port": 2110, "tls": "starttls"},
            {"name": "pop3s", "role": "pop3", "address": "127.0.0.1", "port": 2995, "tls": "implicit"},
        ],
        # The HTTP API, tracking and unsubscribe links; public_url is what links in mail use.
        "http": {"enabled": True, "address": "127.0.0.1", "port": 8025,
                 "public_url": f"http://{hostname}:8025"},
    }
    header = (
        "# mailprime configuration — see docs/configuration.md for every key.\n"
        "# Production: set the listeners' ports to 25 / 587 / 465 (SMTP), 143 / 993 (IMAP) and\n"
        "# 110 / 995 (POP3), and their address to 0.0.0.0.\n\n"
    )
    config_path.write_text(header + tomli_w.dumps(document), encoding="utf-8")
    settings = load_settings(config_path)
    write_self_signed(settings.cert_path, settings.key_path, hostname)
    verp_secret = settings.bounces.secret_path(settings.data_path)
    ensure_secret_file(verp_secret)  # kept if it exists: bounces of mail already sent still verify
    link_secret = settings.http.secret_path(settings.data_path)
    ensure_secret_file(link_secret)  # kept too: links in mail already sent still work
    db = settings.data_path / "mailprime.db"
    if force:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    password = generate_password()
    postmaster = f"postmaster@{domain}"

    async def setup() -> None:
        async with opened_store(settings) as store:
            await store.add_domain(domain)
            await store.add_account(postmaster, hash_password(password))

    asyncio.run(setup())
    console.print(f"created [bold]{config_path}[/]")
    console.print(f"database  {settings.database_url}")
    console.print(f"TLS       {settings.cert_path} (self-signed for {hostname})")
    console.print(f"VERP key  {verp_secret} (signs bounce addresses; keep it secret)")
    console.print(f"link key  {link_secret} (signs tracking and unsubscribe links; keep it secret)")
    console.print(f"HTTP      {settings.http.base_url} (API at /api/v1; "
                  "`mailprime apikey create` makes a key)")
    console.print(f"domain    {domain}")
    console.print(f"account   [bold]{postmaster}[/]  password: [bold]{password}[/]  (shown once)")
    if sandbox:
        console.print("sandbox   on: outbound mail is captured in the postmaster's Sandbox folder")
