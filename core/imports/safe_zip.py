"""Safe reading of uploaded ZIP archives: every entry is checked before a byte of it is used.

Refused for the whole archive (InvalidInput): not a ZIP, more entries than MAX_ARCHIVE_ENTRIES, a
declared uncompressed total over MAX_ARCHIVE_BYTES, every file entry encrypted.
Refused per entry (an ArchiveProblem; the other entries stay usable): `../` or absolute paths,
symlinks, encrypted entries, nested archives, a compression ratio over MAX_ARCHIVE_RATIO, an entry
larger than MAX_UPLOAD_BYTES, and (when read) a size that differs from the declared one.
Ignored silently: directories, `__MACOSX/`, `.DS_Store`, `Thumbs.db`, `desktop.ini`, hidden files.

zipfile does the parsing; the checks are ours because zipfile trusts the archive's own headers.
Entries are read one at a time through a capped stream, so memory stays bounded by one entry
whatever the archive's size.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from core.config import Settings, get_settings
from core.errors import InvalidInput

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}
NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".7z", ".rar", ".bz2", ".xz")
# Below this size a high ratio is harmless (a CSV of zeros compresses 500×); bombs are large.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveEntry:
    name: str  # normalised relative POSIX path inside the archive
    size: int  # declared uncompressed size
    compressed_size: int
    info: zipfile.ZipInfo = field(repr=False, compare=False)

    @property
    def path(self) -> PurePosixPath:
        return PurePosixPath(self.name)


@dataclass(frozen=True)
class ArchiveProblem:
    name: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.name, "error": self.message}


def is_junk(name: str) -> bool:
    """OS litter and hidden files: skipped without a message."""
    return any(part.lower() in JUNK_NAMES or part.startswith(".") for part in PurePosixPath(name).parts)


def normalise_entry_name(raw: str) -> str | None:
    """The entry's relative POSIX path, or None when it is absolute or climbs out with '..'."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):  # /etc/x, C:/x
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


class SafeZip:
    """An opened archive whose entries passed the checks; `problems` lists the ones that did not.

    Use as a context manager; `read(entry)` returns the bytes of one checked entry or raises
    InvalidInput with a per-entry message (e.g. its declared size lied).
    """

    def __init__(self, source: str | Path | IO[bytes], settings: Settings | None = None):
        self.settings = settings or get_settings()
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, NotImplementedError):
            raise InvalidInput("not a ZIP archive (or a damaged one); upload a .zip file") from None
        try:
            self.entries, self.problems = self._check(self._zip.infolist())
        except BaseException:
            self._zip.close()
            raise

    def _check(self, infos: list[zipfile.ZipInfo]) -> tuple[list[ArchiveEntry], list[ArchiveProblem]]:
        limits = self.settings
        if len(infos) > limits.max_archive_entries:
            raise InvalidInput(
                f"the archive has {len(infos):,} entries; at most {limits.max_archive_entries:,} are allowed"
            )
        declared_total = sum(info.file_size for info in infos)
        if declared_total > limits.max_archive_bytes:
            raise InvalidInput(
                f"the archive unpacks to {declared_total:,} bytes; at most {limits.max_archive_bytes:,} "
                "are allowed (zip bomb guard)"
            )
        entries: list[ArchiveEntry] = []
        problems: list[ArchiveProblem] = []
        seen: set[str] = set()
        encrypted = files = 0
        for info in infos:
            if not info.filename:  # zipfile's is_dir() fails on it; found by tests/hostile fuzzing
                problems.append(ArchiveProblem("(no name)", "entry without a name; skipped"))
                continue
            if info.is_dir():
                continue
            name = normalise_entry_name(info.filename)
            if name is None:
                problems.append(ArchiveProblem(info.filename, "path leaves the archive (absolute or '..'); skipped"))
                continue
            if is_junk(name):
                continue
            files += 1
            problem = self._entry_problem(info, name, seen)
            if problem:
                encrypted += info.flag_bits & 0x1
                problems.append(ArchiveProblem(name, problem))
                continue
            seen.add(name)
            entries.append(ArchiveEntry(name, info.file_size, info.compress_size, info))
        if files and encrypted == files:
            raise InvalidInput("the archive is encrypted (password-protected); upload an unencrypted ZIP")
        return entries, problems

    def _entry_problem(self, info: zipfile.ZipInfo, name: str, seen: set[str]) -> str | None:
        limits = self.settings
        if _is_symlink(info):
            return "symbolic link; links are not followed"
        if info.flag_bits & 0x1:
            return "encrypted (password-protected) entry; skipped"
        if name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
            return "nested archive; unpack it and upload its contents instead"
        if name in seen:
            return "duplicate entry name; only the first is used"
        if info.file_size > limits.max_upload_bytes:
            return f"{info.file_size:,} bytes; files over {limits.max_upload_bytes:,} bytes are refused"
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > limits.max_archive_ratio * max(1, info.compress_size):
            return (f"compression ratio {info.file_size / max(1, info.compress_size):,.0f}:1 is over the limit "
                    f"of {limits.max_archive_ratio}:1 (zip bomb guard)")
        return None

    def read(self, entry: ArchiveEntry) -> bytes:
        """Read one entry, never more than its declared size (+1 byte to notice a lie)."""
        chunks: list[bytes] = []
        got = 0
        try:
            with self._zip.open(entry.info) as stream:
                # zipfile stops at the declared size itself; reading past it on the raw stream would
                # be the bomb, so the cap here is the declared size plus one probe byte.
                while got <= entry.size:
                    chunk = stream.read(min(READ_CHUNK, entry.size + 1 - got))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            if "CRC" in reason or isinstance(exc, EOFError):
                reason = f"its declared size or checksum does not match its contents ({reason})"
            raise InvalidInput(f"{entry.name}: cannot be read: {reason}") from None
        if got != entry.size:
            raise InvalidInput(f"{entry.name}: declared size {entry.size:,} bytes does not match its contents")
        return b"".join(chunks)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
