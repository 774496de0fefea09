"""Secrets stay in memory: one scrubber for everything bench writes or logs.

A secret is the hub token (HF_TOKEN) and what a cell's engine settings declare
(EngineSettings.secrets: a server URL's credentials, every value of `engine.server_env`,
the API key `engine.api_key_env` names). Rows, the
config stored in them, reports, Hydra's saved configs, cell and server logs and error
messages all pass through `Scrubber.scrub` before they reach a disk or a terminal.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, TextIO
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

REDACTED = "***"
_MIN_SECRET = 4  # shorter values would scrub ordinary text; they are no secrets anyway
# user:password@ (or token@) in any URL, whoever wrote it
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def strip_credentials(url: str) -> str:
    """The URL without its user:password@ part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Scrubber:
    """Replaces every known secret (and any URL's credentials) in a text with ***."""

    def __init__(self, secrets: Iterable[Optional[str]] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= _MIN_SECRET}
        self._secrets = sorted(found, key=len, reverse=True)  # longest first

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _URL_CREDENTIALS.sub(f"{REDACTED}@", text)

    def scrub_file(self, path: Path) -> None:
        """Rewrite a text file without its secrets (in place; left alone when unreadable)."""
        try:
            data = path.read_bytes()
        except OSError:
            return
        text = data.decode("utf-8", errors="surrogateescape")
        clean = self.scrub(text)
        if clean != text:
            path.write_bytes(clean.encode("utf-8", errors="surrogateescape"))

    def scrub_tree(self, root: Path) -> None:
        """Every regular file under `root` (Hydra's saved configs and logs, cell logs)."""
        if root.is_file():
            self.scrub_file(root)
            return
        for path in root.rglob("*") if root.is_dir() else ():
            if path.is_file() and not path.is_symlink() and path.suffix != ".parquet":
                self.scrub_file(path)


class ScrubbedStream:
    """A text stream that scrubs what is written through it (the sweep's stdout and stderr:
    Hydra's launcher logs every job's overrides, a URL's password among them)."""

    def __init__(self, stream: TextIO, scrub: Scrubber) -> None:
        self._stream = stream
        self._scrub = scrub

    def write(self, text: str) -> int:
        self._stream.write(self._scrub.scrub(text))
        return len(text)

    def __getattr__(self, name: str) -> object:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def config_secrets(cfg: "BenchConfig") -> list[Optional[str]]:
    """The secrets a cell's configuration holds or points to: the hub token, and what its
    engine's settings say are secrets (a server URL's credentials, its environment, an API
    key)."""
    return [os.environ.get("HF_TOKEN"), *cfg.engine.secrets()]


def scrubber(configs: Iterable["BenchConfig"] = ()) -> Scrubber:
    """The scrubber for these cells (the hub token alone when there are none)."""
    secrets: list[Optional[str]] = [os.environ.get("HF_TOKEN")]
    for cfg in configs:
        secrets += config_secrets(cfg)
    return Scrubber(secrets)


def args_scrubber(args: Iterable[str]) -> Scrubber:
    """For messages about a command line not yet composed into cells: the hub token, any
    URL's credentials, and the values of engine.server_env overrides."""
    secrets: list[Optional[str]] = [os.environ.get("HF_TOKEN")]
    for arg in args:
        key, _, value = arg.partition("=")
        if "server_env" in key:
            secrets.append(value)
            secrets += re.findall(r"[:=]\s*([^,{}\s]+)", value)
    return Scrubber(secrets)


def redacted(cfg: "BenchConfig") -> "BenchConfig":
    """The configuration as rows may store it: every secret the engine's settings hold
    replaced (a URL without its credentials, a server's environment values as ***)."""
    return dataclasses.replace(cfg, engine=cfg.engine.redacted())
