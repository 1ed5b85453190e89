"""Run stages in order on one run directory, with resume and atomic outputs.

Each stage module (``edgeft/stages/<name>.py``) exposes ``NAME``, ``fingerprint(ctx) -> str`` and
``run(ctx, work_dir, force=False) -> list[Artifact]`` (paths relative to ``work_dir``; or the list and a
dict the manifest records), reading other stages' outputs only through ``ctx.require``. The pipeline gives every
stage a fresh temp folder ``.<name>.tmp``, renames it to ``<name>/`` only when the stage returned,
and then records the artifacts (sha256, parents) in ``manifest.json``. A stage whose fingerprint
(config it reads + sha256 of its inputs + the source of the edgeft code it runs) is unchanged and whose
files are intact is skipped, so upgrading edgeft redoes exactly the stages whose code changed.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeft.config import RunConfig
from edgeft.console import CONSOLE, LOG_FILE, format_seconds
from edgeft_runtime.fileio import sha256_file
from edgeft.errors import RunDirError
from edgeft.manifest import Artifact, Manifest

STAGES = ("finetune", "export", "compile", "verify")


def log(msg: str) -> None:
    from edgeft.console import CONSOLE
    from edgeft.distributed import rank, world_size

    who = f"[edgeft rank {rank()}]" if world_size() > 1 else "[edgeft]"
    CONSOLE.line(f"{who} {msg}")


@dataclass
class RunContext:
    run_dir: Path
    config: RunConfig
    manifest: Manifest
    log: Callable[[str], None] = log
    _splits: Any = field(default=None, repr=False)
    _verified: dict = field(default_factory=dict, repr=False)

    def splits(self):
        """The cleaned train/validation/test splits, read once per run (fingerprint and finetune share them)."""
        if self._splits is None:
            from edgeft.data.loading import load_splits

            self._splits = load_splits(self.config)
        return self._splits

    _lock: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, config: RunConfig, lock: bool = True) -> "RunContext":
        """Open (or start) a run directory. Refuses a folder that holds anything edgeft did not write, and
        one another edgeft process is working in (``lock``; release with ``close``)."""
        from edgeft.distributed import is_main

        from edgeft.targets import resolve_host

        run_dir = Path(config.out).resolve()
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"--out {run_dir} is a file, not a folder", fix="pass --out a new or empty folder")
        _check_owned(run_dir, Manifest.load(run_dir))
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            held = _acquire_lock(run_dir) if lock and is_main() else None
        except OSError as e:
            raise RunDirError(f"--out {run_dir} cannot be written ({e.strerror or e})",
                              fix="pass --out a folder you can write") from None
        try:
            manifest = Manifest.load(run_dir)          # again, now that no other edgeft process works here
            _check_owned(run_dir, manifest)
        except BaseException:
            _release_lock(held)
            raise
        from edgeft.models import model_modality

        # library callers get the concrete name recorded too
        targets, _ = resolve_host(list(config.targets),
                                  modality=model_modality(config) if "host" in config.targets else None)
        ctx = cls(run_dir, config.model_copy(update={"targets": targets}), manifest)
        ctx._lock, ctx._created = held, created
        return ctx

    _created: bool = field(default=False, repr=False)

    def close(self) -> None:
        _release_lock(self._lock)
        self._lock = None
        # a folder this command made and no stage got to write into (bad data, a model that does not load):
        # its log and lock go with it, so a failed first run leaves nothing behind
        if self._created and self.run_dir.is_dir() and not (self.run_dir / "manifest.json").exists() and \
                {p.name for p in self.run_dir.iterdir()} <= {LOG_FILE, LOCK_FILE}:
            import shutil

            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path(self, rel: str) -> Path:
        return self.run_dir / rel

    def require(self, kind: str, **fields: str) -> Path:
        """The path of an artifact of an earlier stage (``artifacts.KINDS``), after checking every file the
        manifest recorded under it against its sha256. RunDirError names what is missing or changed and
        the command that rebuilds it."""
        from edgeft.artifacts import rel_path

        self.recorded(kind, **fields)
        return self.run_dir / rel_path(kind, **fields)

    def recorded(self, *kinds: str, **fields: str) -> list[Artifact]:
        """The manifest's artifacts at or under each kind's path, checked as ``require`` checks them (what a
        stage reads, so what its fingerprint covers)."""
        from edgeft.artifacts import rel_path, stage_of

        out = []
        for kind in kinds:
            stage, rel = stage_of(kind), rel_path(kind, **fields)
            arts = [a for a in self.manifest.by_stage(stage) if a.path == rel or a.path.startswith(rel + "/")]
            if not self.manifest.stage_done(stage) or not arts:
                target = f" --target {fields['target']}" if "target" in fields else ""
                raise RunDirError(f"{self.run_dir} has no {rel} from the {stage!r} stage",
                                  fix=f"run `edgeft {stage} {self.run_dir}{target}` first")
            self._verify(arts)
            out += arts
        return out

    def _verify(self, arts: list[Artifact]) -> None:
        from edgeft_runtime.fileio import sha256_file

        for a in arts:
            p = self.run_dir / a.path
            try:
                stat = p.stat()
            except OSError:
                stat = None
            key = (a.path, a.sha256, stat and (stat.st_size, stat.st_mtime_ns))
            if key in self._verified:
                continue
            if stat is None or stat.st_size != a.bytes or sha256_file(p) != a.sha256:
                what = "is missing" if stat is None else "does not match the sha256 manifest.json recorded"
                raise RunDirError(f"{p} {what}: the {a.stage!r} stage's output was changed or damaged, "
                                  "so nothing built from it can be trusted",
                                  fix=f"rebuild it: `edgeft {a.stage} {self.run_dir} --force`, then the stages after it")
            self._verified[key] = True

    def facts(self):
        """Task, modality and labels of this run (written by finetune)."""
        from edgeft.artifacts import RunFacts

        return RunFacts.read(self.require("finetune.facts"))

    def fingerprint(self, stage: str, config_part: Any, upstream: list[Artifact], code: bool = True,
                    modules: tuple[str, ...] = ()) -> str:
        """What a stage's outputs depend on; ``code``: include the source of the stage's edgeft code (its
        module, what it imports, and ``modules`` it loads by name)."""
        from edgeft import __version__

        payload = {"stage": stage, "edgeft": __version__, "config": config_part,
                   "inputs": sorted((a.path, a.sha256) for a in upstream)}
        if code:
            payload["code"] = code_digest(f"edgeft.stages.{stage}", *modules)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


LOCK_FILE = ".edgeft.lock"


def _check_owned(run_dir: Path, manifest: Manifest) -> None:
    """edgeft replaces only what it wrote: a folder with no manifest must hold nothing but what an interrupted
    first stage leaves; with a manifest, the stage folders may hold only recorded files, and the
    top-level reports only what edgeft last published."""
    if not run_dir.is_dir():
        return
    # what an interrupted first stage leaves: its log, lock, work folder, Trainer checkpoints, TensorBoard
    ours = lambda p: p.name in (LOG_FILE, LOCK_FILE, "tensorboard") or (p.name.startswith(".") and (  # noqa: E731
        ".tmp" in p.name or p.name.endswith((".old", ".ckpt"))))
    if not (run_dir / "manifest.json").is_file():
        foreign = [p.name for p in sorted(run_dir.iterdir()) if not ours(p)]
        if foreign:
            raise RunDirError(f"{run_dir} is not an edgeft run directory and is not empty (it holds "
                              f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); edgeft would write "
                              "finetune/, export/, compile/, verify/ and report.* there and changes nothing in it",
                              fix="pass --out a new or empty folder")
        return
    recorded = {a.path for a in manifest.artifacts}
    recorded |= {p for paths in manifest.data.get("pending", {}).values() for p in paths}
    published = manifest.data.get("reports", {})
    # manifests of schema 1 (edgeft before the run-directory checks) recorded only some of each stage's
    # files and none of the published reports: their recorded stages' folders are edgeft's as they are
    legacy = manifest.data.get("schema_version", 1) < 2
    foreign = []
    for stage in STAGES:
        folder = run_dir / stage
        if folder.is_dir() and not (legacy and manifest.stage_done(stage)):
            foreign += [p.relative_to(run_dir).as_posix() for p in sorted(folder.rglob("*"))
                        if p.is_file() and p.relative_to(run_dir).as_posix() not in recorded]
    edited = []
    for name in ("report.md", "report.json"):
        p, source = run_dir / name, run_dir / "verify" / name
        if not p.is_file():
            continue
        sha = sha256_file(p)
        copied_from_verify = legacy and source.is_file() and sha256_file(source) == sha
        if published.get(name) != sha and not copied_from_verify:
            (edited if name in published else foreign).append(name)
    if edited:
        raise RunDirError(f"{run_dir / edited[0]} was changed since edgeft wrote it; the next verify rewrites it",
                          fix=f"keep your edits in a copy outside the run directory, then delete {edited[0]} "
                              f"(`edgeft verify {run_dir}` writes it again)")
    if foreign:
        raise RunDirError(f"{run_dir} holds files edgeft did not write where it would write: "
                          f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}",
                          fix="move them out of the run directory, or pass --out another folder")


_HELD: dict[Path, list] = {}            # run dir -> [lock file, users in this process]


def _release_lock(held) -> None:
    entry = _HELD.get(held) if held is not None else None
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        entry[0].close()                   # closing the file releases the flock
        del _HELD[held]


def _acquire_lock(run_dir: Path):
    """An exclusive flock on RUN_DIR/.edgeft.lock, held while this process works on the run directory (a
    second open in the same process shares it). The kernel drops it when the process dies, so a killed run
    leaves nothing to clean up. Returns the key ``_release_lock`` takes."""
    import fcntl
    import os
    import socket

    if run_dir in _HELD:
        _HELD[run_dir][1] += 1
        return run_dir
    f = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunDirError(f"{run_dir} is in use by {holder}",
                          fix="wait for that command to finish (or stop it), or pass --out another folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"edgeft process {os.getpid()} on {socket.gethostname()} "
            f"(`{' '.join(sys.argv[:3])} ...`, started {time.strftime('%H:%M:%S')})")
    f.flush()
    _HELD[run_dir] = [f, 1]
    return run_dir


def publish_reports(ctx: RunContext) -> None:
    """Copy verify's report to the run directory's top level and record what was published."""
    from edgeft_runtime.fileio import write_text_atomic

    sources = {"report.json": ctx.require("verify.report_json"), "report.md": ctx.require("verify.report_md")}
    # recorded before they are written: a kill in between leaves reports the manifest already knows
    ctx.manifest.data["reports"] = {name: sha256_file(src) for name, src in sources.items()}
    ctx.manifest.save()
    for name, src in sources.items():
        write_text_atomic(ctx.path(name), src.read_text(encoding="utf-8"))


PACKAGE_DIR = Path(__file__).resolve().parent
# the device runtime's package: verify and the backends run engines through it, so stage code digests cover it
ROOTS = ("edgeft", "edgeft_runtime")


def _root(top: str) -> Path:
    if top == "edgeft":
        return PACKAGE_DIR
    import edgeft_runtime                  # runtime/edgeft_runtime in a checkout, site-packages in a wheel install

    return Path(edgeft_runtime.__file__).resolve().parent


def _module_file(module: str) -> Path | None:
    top, *parts = module.split(".")
    if top not in ROOTS:
        return None
    base = _root(top)
    if not parts:
        return base / "__init__.py"
    rel = Path(*parts)
    for f in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
        if f.is_file():
            return f
    return None


def edgeft_imports(module: str) -> list[str]:
    """``module`` and every edgeft module it imports, transitively, read from the source (nothing is
    imported): ``import edgeft.x``, ``from edgeft.x import y`` (``y`` too when it is a submodule). Modules
    loaded by name at run time (backends) are not seen: a stage passes them to ``code_digest`` itself."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in ROOTS]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] in ROOTS:
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def code_digest(*modules: str) -> str:
    """sha256 over the source of ``modules`` and the edgeft modules they import, transitively."""
    h = hashlib.sha256()
    for name in sorted({m for module in modules for m in edgeft_imports(module)}):
        h.update(name.encode() + b"\0" + _module_file(name).read_bytes() + b"\0")
    return h.hexdigest()


def run_stage(ctx: RunContext, name: str, force: bool = False) -> bool:
    """Run one stage unless it is current. Returns True when it ran.

    Under torchrun every rank runs the stages marked ``DISTRIBUTED`` (finetune) in a scratch folder of its
    own; only rank 0's outputs are kept and recorded, and the other ranks skip the remaining stages.
    """
    from edgeft.distributed import is_main, rank

    if name not in STAGES:
        raise RunDirError(f"unknown stage {name!r}; stages: {list(STAGES)}")
    stage = importlib.import_module(f"edgeft.stages.{name}")
    if not is_main() and not getattr(stage, "DISTRIBUTED", False):
        return False
    fp = stage.fingerprint(ctx)
    if not force and ctx.manifest.is_current(name, fp):
        ctx.log(f"{name}: up to date, skipped (use --force to redo)")
        return False
    rec = ctx.manifest.data["stages"].get(name)
    if not force and rec and rec.get("fingerprint") == fp:       # nothing changed but its own files
        ctx.log(f"{name}: {ctx.manifest.damaged(name)} is missing or was changed since this stage wrote it: "
                "redoing the stage")
    work = ctx.run_dir / (f".{name}.tmp" if is_main() else f".{name}.tmp-rank{rank()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx.log(f"{name}: started")
    t0 = time.time()
    try:
        with CONSOLE.capture(ctx.run_dir / LOG_FILE):
            result = stage.run(ctx, work, force=force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not is_main():
        shutil.rmtree(work, ignore_errors=True)
        return True
    artifacts, info = result if isinstance(result, tuple) else (result, {})
    declared = {a.path for a in artifacts}
    # every file the stage wrote is recorded (undeclared ones as plain files), so every byte is checked later
    artifacts += [Artifact(p.relative_to(work).as_posix(), "file", name) for p in sorted(work.rglob("*"))
                  if p.is_file() and p.relative_to(work).as_posix() not in declared]
    for a in artifacts:
        a.path = f"{name}/{a.path}"
    # the stage finished with validated inputs: its config is recorded, and its files are announced as
    # pending before the swap, so a kill between the swap and the record leaves files edgeft knows it wrote
    ctx.manifest.data["config"] = json.loads(ctx.config.model_dump_json())
    ctx.manifest.data.setdefault("pending", {})[name] = [a.path for a in artifacts]
    ctx.manifest.save()
    _swap_in(work, ctx.run_dir / name)
    ctx.manifest.data.update(info)
    ctx.manifest.record(name, fp, artifacts, time.time() - t0)
    ctx.manifest.data["pending"].pop(name, None)
    ctx.manifest.save()
    ctx.log(f"{name}: done in {format_seconds(time.time() - t0)}")
    return True


def _swap_in(work: Path, final: Path) -> None:
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def run_pipeline(ctx: RunContext, stages: tuple[str, ...] = STAGES, force: bool = False) -> None:
    """Run ``stages`` in order; then, when the config asks for it and verify ran, the accuracy fallback."""
    from edgeft.distributed import is_main

    for name in stages:
        run_stage(ctx, name, force=force)
    if is_main() and ctx.config.fallback and "verify" in stages:
        _accuracy_fallback(ctx)


def _accuracy_fallback(ctx: RunContext) -> None:
    """While an accuracy gate fails: keep the next most sensitive block in FP32 and rebuild export, compile
    and verify, within the config's block and time budget; the rounds go into verify's report, re-recorded."""
    from edgeft import fallback
    from edgeft.config import build_config
    from edgeft_runtime.fileio import read_json, write_json_atomic, write_text_atomic
    from edgeft.report import render_markdown

    report = read_json(ctx.require("verify.report_json"))
    if not fallback.accuracy_failed(report):
        return
    sens = read_json(ctx.require("finetune.metrics"))["qat"].get("sensitivity") or []
    kept = list(ctx.config.keep_fp32)
    rounds = [fallback.snapshot(report, kept)]
    t0, limit, stopped_by = time.monotonic(), ctx.config.fallback_minutes, "blocks"
    for group in fallback.candidates(sens, kept, ctx.config.fallback):
        if limit is not None and time.monotonic() - t0 > limit * 60:
            stopped_by = "time"
            break
        kept.append(group)
        ctx.log(f"fallback: accuracy gate failed; keeping {kept} in FP32 and rebuilding")
        ctx.config = build_config({"keep_fp32": kept}, ctx.config)
        for stage in ("export", "compile", "verify"):
            run_stage(ctx, stage)
        report = read_json(ctx.require("verify.report_json"))
        rounds.append(fallback.snapshot(report, kept))
        if not fallback.accuracy_failed(report):
            break
    report["fallback"] = fallback.summary(report, ctx.config.fallback, limit, kept, rounds, stopped_by,
                                          (time.monotonic() - t0) / 60)
    write_json_atomic(ctx.require("verify.report_json"), report)
    write_text_atomic(ctx.require("verify.report_md"), render_markdown(report))
    rerecord(ctx, "verify")


def rerecord(ctx: RunContext, stage: str) -> None:
    """Record a stage's files again after the pipeline changed them in place (the fallback's report)."""
    arts = ctx.manifest.by_stage(stage)
    rec = ctx.manifest.data["stages"][stage]
    extra = {k: v for k, v in rec.items() if k not in ("fingerprint", "seconds", "finished")}
    ctx.manifest.record(stage, rec["fingerprint"], arts, rec["seconds"], extra)
    ctx.manifest.save()
