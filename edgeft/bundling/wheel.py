"""The device runtime's wheel (``edgeft_runtime``), written from the package edgeft carries.

A wheel is a zip with the package, ``*.dist-info/{METADATA,WHEEL,entry_points.txt,RECORD}`` (PEP 427/491).
It is written here rather than by a build backend so that ``edgeft package`` works from any edgeft
install (a wheel install has no ``runtime/`` source tree to build from) and gives the same bytes every
time (sorted entries, fixed timestamps), which the byte-reproducible bundle needs. ``pip wheel ./runtime``
builds the same distribution from the repository.
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _metadata() -> str:
    import edgeft_runtime as rt

    lines = ["Metadata-Version: 2.1", "Name: edgeft-runtime", f"Version: {rt.__version__}",
             "Summary: Run and check edgeft bundles on edge devices: numpy + onnxruntime, no torch.",
             f"Requires-Python: {rt.REQUIRES_PYTHON}"]
    lines += [f"Requires-Dist: {r}" for r in rt.REQUIRES]
    for extra, reqs in sorted(rt.EXTRAS.items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    return "\n".join(lines) + "\n"


def wheel_name() -> str:
    import edgeft_runtime as rt

    return f"edgeft_runtime-{rt.__version__}-py3-none-any.whl"


def build_runtime_wheel(dest_dir: Path) -> Path:
    import edgeft_runtime as rt

    pkg = Path(rt.__file__).resolve().parent
    dist = f"edgeft_runtime-{rt.__version__}.dist-info"
    files = {f"edgeft_runtime/{p.relative_to(pkg).as_posix()}": p.read_bytes()
             for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}
    files[f"{dist}/METADATA"] = _metadata().encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgeft\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nedgeft-runtime = edgeft_runtime.cli:main\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / wheel_name()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():           # package first, dist-info after, RECORD last
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out
