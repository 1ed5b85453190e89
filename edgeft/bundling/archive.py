"""A folder as a byte-reproducible ``.tar.gz``: sorted entries, one top folder, fixed mtime, owner and modes,
no absolute paths, and a gzip header without a timestamp or file name. The same folder gives the same sha256."""
from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

# SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else 1980-01-01: no timestamp of the packaging run
DEFAULT_EPOCH = 315532800


def write_tar_gz(folder: Path, dest: Path, top: str | None = None) -> None:
    """``folder`` as ``dest``, byte-reproducible, under one top folder ``top`` (default: the folder's name)."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    top = top or folder.name
    paths = sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for p in [folder, *paths]:
                rel = top if p == folder else f"{top}/{p.relative_to(folder).as_posix()}"
                if p.is_symlink() or not (p.is_file() or p.is_dir()):
                    raise ValueError(f"{p} is not a plain file or folder")
                info = tarfile.TarInfo(rel)
                info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
                if p.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size = p.stat().st_size
                    info.mode = 0o755 if os.access(p, os.X_OK) else 0o644
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
