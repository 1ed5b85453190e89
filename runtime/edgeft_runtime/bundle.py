"""An edgeft bundle on the device: opened from its folder or its ``.tar.gz``, and checked before anything in
it is loaded: archive members (no absolute paths, ``..``, links or devices), the signature of bundle.json when
a public key is given, bundle.json against its schema (every path it names inside the bundle), then the size
and sha256 of every file, with nothing missing and nothing added, and its labels against the engine's. Only
then are the engine and its pre-processing opened.
"""
from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from edgeft_runtime.errors import BundleError, EdgeftError
from edgeft_runtime.fileio import read_json, sha256_file
from edgeft_runtime.schema import BUNDLE_SCHEMA, BUNDLE_SCHEMA_VERSION, validate
from edgeft_runtime.signing import SIGNATURE_FILE

BUNDLE_JSON = "bundle.json"
UNLISTED = (BUNDLE_JSON, SIGNATURE_FILE)          # the two files bundle.json cannot list (itself, its signature)
# hostinfo ISA classes whose u8s8 int8 kernels add pairs of u8 x s8 products into int16, which saturates
SATURATING_U8S8 = ("avx2", "avx512")
SAFE_TARGET = "x86-avx2-int8"                     # the shipped target whose u8u8 engine is correct on those CPUs
MIN_ATOL = 1e-4
KIT_FLOOR = 0.05      # share of the largest |logit|: a TensorRT kit's logits were recorded by ONNX Runtime


def kit_floor(engine_logits: np.ndarray) -> float:
    """A TensorRT kit's floor on atol: a share of the golden set's largest |logit|."""
    return KIT_FLOOR * float(np.abs(engine_logits).max()) if engine_logits.size else 0.0


def decisive(logits: np.ndarray, atol: float) -> np.ndarray:
    """Per input: whether its top-1 margin exceeds 2 x atol, so its label must not change within the tolerance."""
    srt = np.sort(logits, -1)
    return (srt[:, -1] - srt[:, -2]) > 2 * atol


def golden_atol(measured: float, floor: float, kit: float = 0.0) -> float:
    """The golden tolerance from what it is derived from (edgeft.bundling.golden.tolerance writes it with this;
    ``check`` recomputes it, so an edited atol in an unsigned bundle.json is caught)."""
    return max(4 * measured, floor, kit, MIN_ATOL)


def safe_relpath(rel: str, what: str) -> PurePosixPath:
    """A path inside the bundle: relative, no ``..``, no backslashes; BundleError otherwise."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or rel.startswith("~"):
        raise BundleError(f"{what} {rel!r} points outside the bundle", fix="do not install this bundle; get it again from its source")
    return p


def check_members(tar: tarfile.TarFile, archive: Path) -> str:
    """The archive's one top folder, after refusing any member that could write outside it or is not a plain
    file or folder (symlinks, hard links, devices, fifos)."""
    tops = set()
    try:
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{archive} is damaged or cut short ({e or type(e).__name__})",
                          fix="get the bundle again from its source (compare its sha256)") from None
    for m in members:
        parts = PurePosixPath(m.name).parts
        if not parts or parts[0] == ".":
            raise BundleError(f"{archive} is not an edgeft bundle archive (its members are not inside one named folder)",
                              fix="pass the .tar.gz that `edgeft package` wrote, or the bundle folder")
        safe_relpath(m.name.rstrip("/"), f"{archive}: archive member")
        if not (m.isfile() or m.isdir()):
            kind = ("a symlink" if m.issym() else "a hard link" if m.islnk() else "a device" if m.isdev()
                    else "a fifo" if m.isfifo() else "not a plain file")
            raise BundleError(f"{archive}: archive member {m.name!r} is {kind}; bundles hold plain files only",
                              fix="do not install this bundle; get it again from its source")
        tops.add(PurePosixPath(m.name).parts[0])
    if len(tops) != 1:
        raise BundleError(f"{archive} is not an edgeft bundle archive (it has {len(tops)} top-level entries, not one folder)",
                          fix="pass the .tar.gz that `edgeft package` wrote, or the bundle folder")
    return tops.pop()


def extract(archive: Path, dest: Path) -> Path:
    """Extract a bundle archive into ``dest`` (which must be empty) after ``check_members``; returns the bundle folder."""
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{archive} is not a readable .tar.gz ({e})", fix="pass the .tar.gz `edgeft package` wrote, or the bundle folder") from None
    with tar:
        top = check_members(tar, archive)
        try:
            if hasattr(tarfile, "data_filter"):        # Python >= 3.10.12 / 3.11.4: the stdlib's own guard as well
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)                   # members were checked above
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BundleError(f"{archive} could not be extracted: {e}", fix="get the bundle again from its source") from None
    return dest / top


def check_files(root: Path, meta: dict) -> None:
    """Every file bundle.json lists is there with its size and sha256; no other file, no link, anywhere."""
    listed = {}
    for f in meta["files"]:
        rel = safe_relpath(f["path"], "bundle.json lists a file")
        listed[rel.as_posix()] = f
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            raise BundleError(f"{root}: {rel} is a symlink; bundles hold plain files only",
                              fix="do not install this bundle; get it again from its source")
        if p.is_file() and rel not in listed and rel not in UNLISTED:
            raise BundleError(f"{root}: {rel} is not part of this bundle (bundle.json does not list it): files were "
                              "added after it was made", fix=f"remove {rel}, or get the bundle again from its source")
    for rel, f in listed.items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"{root}: {rel} is missing", fix="get the bundle again from its source (copy the whole folder)")
        if p.stat().st_size != f["bytes"] or sha256_file(p) != f["sha256"]:
            raise BundleError(f"{root}: {rel} was changed (its sha256 differs from the one bundle.json records): "
                              "the bundle was damaged or tampered with", fix="do not install this bundle; get it again from its source")


def check_consistent(root: Path, meta: dict) -> None:
    """bundle.json's labels are the engine's (``engine/labels.json``, covered by the checksums) and the golden
    set's: a relabelled bundle.json would otherwise pass every checksum and predict the wrong names."""
    engine_labels = root / meta["engine"]["dir"] / "labels.json"
    golden = root / meta["golden"]["expected"]
    for path in (engine_labels, golden):
        if not path.is_file():
            continue
        data = read_json(path)
        labels = data if isinstance(data, list) else data.get("labels")
        if labels is not None and labels != meta["labels"]:
            raise BundleError(f"{root}: bundle.json's labels differ from {path.relative_to(root)} (the engine's own): "
                              "bundle.json was edited", fix="do not install this bundle; get it again from its source")
        tol = data.get("tolerance") if isinstance(data, dict) else None
        if tol is not None:
            for key, value in meta["golden"]["tolerance"].items():
                if key in tol and tol[key] != value:
                    raise BundleError(f"{root}: bundle.json's golden.tolerance.{key} ({value!r}) differs from "
                                      f"{path.relative_to(root)}'s ({tol[key]!r}): bundle.json was edited",
                                      fix="do not install this bundle; get it again from its source")
    engine_json = root / meta["engine"]["dir"] / "engine.json"
    recorded = meta["target"].get("int8_kernels")
    if recorded is not None and engine_json.is_file():
        data = read_json(engine_json)
        built = data.get("int8_kernels") if isinstance(data, dict) else None
        if built is not None and built != recorded:
            raise BundleError(f"{root}: bundle.json's target.int8_kernels ({recorded}) differs from "
                              f"{meta['engine']['dir']}/engine.json's ({built}), the engine's own: bundle.json was edited",
                              fix="do not install this bundle; get it again from its source")


def load_meta(root: Path) -> dict:
    p = root / BUNDLE_JSON
    if not p.is_file():
        raise BundleError(f"{root} is not an edgeft bundle (no {BUNDLE_JSON})",
                          fix="pass the folder or .tar.gz that `edgeft package` wrote")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{p} is not valid JSON ({e})", fix="get the bundle again from its source") from None
    if isinstance(meta, dict) and isinstance(meta.get("schema_version"), int) and meta["schema_version"] > BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{p} has schema_version {meta['schema_version']}; this edgeft-runtime reads {BUNDLE_SCHEMA_VERSION}",
                          fix="install the edgeft-runtime wheel the bundle carries (runtime/)")
    validate(meta, BUNDLE_SCHEMA, str(p))
    listed = {f["path"] for f in meta["files"]}
    fields = {"engine.dir": meta["engine"]["dir"], "engine.model_file": meta["engine"]["model_file"],
              "golden.inputs": meta["golden"]["inputs"], "golden.expected": meta["golden"]["expected"],
              "preprocessing.file": meta["preprocessing"]["file"], "runtime.wheel": meta["runtime"]["wheel"]}
    if meta.get("reference"):
        fields.update({"reference.dir": meta["reference"]["dir"], "reference.model_file": meta["reference"]["model_file"]})
    for name, rel in fields.items():          # every path it names is one of its own files, or a folder of them
        safe_relpath(rel, f"{p}: {name}")
        if rel not in listed and not any(f.startswith(rel.rstrip("/") + "/") for f in listed):
            raise BundleError(f"{p}: {name} {rel!r} is not a file of the bundle", fix="get the bundle again from its source")
    return meta


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@dataclass
class GoldenResult:
    passed: bool
    inputs: int
    atol: float
    max_abs_diff: float
    outside_tolerance: list[int]
    top1_checked: int
    top1_mismatches: list[int]
    agreement_with_fp32_baseline: float | None
    engine: str

    not_checked: str | None = None

    def line(self) -> str:
        what = (f"golden set: {self.inputs} inputs through {self.engine}, max |Δlogit| {self.max_abs_diff:.4g} "
                f"(tolerance {self.atol:.4g}), top-1 same on {self.top1_checked - len(self.top1_mismatches)}/"
                f"{self.top1_checked} decisive inputs")
        if self.passed:
            return f"PASS {what}"
        bad = [self.not_checked] if self.not_checked else []
        if self.outside_tolerance:
            bad.append(f"inputs {self.outside_tolerance[:8]} outside the tolerance")
        if self.top1_mismatches:
            bad.append(f"inputs {self.top1_mismatches[:8]} changed their top-1 label")
        return f"FAIL {what}: {'; '.join(bad)}"


@dataclass
class Bundle:
    root: Path
    meta: dict
    source: Path
    signer: str | None = None
    _tmp: Any = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)
    _pre: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, public_key: str | Path | None = None) -> "Bundle":
        """Open a bundle folder or ``.tar.gz`` (extracted to a private temp folder, removed by ``close``), after
        every check in the module docstring. ``public_key``: require a valid signature by that key."""
        from edgeft_runtime import signing

        src = Path(path)
        tmp = None
        if src.is_dir():
            root = src
        elif src.is_file():
            tmp = tempfile.TemporaryDirectory(prefix="edgeft-bundle-")
            try:
                root = extract(src, Path(tmp.name))
            except BaseException:
                tmp.cleanup()
                raise
        else:
            raise BundleError(f"{src}: no such bundle folder or archive", fix="pass the folder or .tar.gz that `edgeft package` wrote")
        try:
            signer = None
            if public_key is not None:       # the signature first: it vouches for bundle.json, which vouches for the rest
                if not (root / BUNDLE_JSON).is_file():
                    load_meta(root)
                signer = signing.verify(root, signing.load_public_key(Path(public_key)))
            meta = load_meta(root)
            check_files(root, meta)
            check_consistent(root, meta)
        except BundleError as e:
            if tmp is not None:
                tmp.cleanup()
                e.message = e.message.replace(str(root), f"{src} (member {root.name})")   # name the archive, not a temp folder
                e.args = (e.message,)
            raise
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise
        return cls(root=root, meta=meta, source=src, signer=signer, _tmp=tmp)

    def close(self) -> None:
        if self._session is not None and hasattr(self._session, "close"):
            self._session.close()
        self._session = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # what it is --------------------------------------------------------------------------------------------
    @property
    def signed(self) -> bool:
        return (self.root / SIGNATURE_FILE).is_file()

    def verdict_line(self) -> str:
        """The verdict the bundle was released with, as every device command prints it."""
        v = self.meta["verification"]
        host = v.get("host") or {}
        where = f" on {host.get('cpu', '?')} [{host.get('isa_class', '?')}]" if host else ""
        extra = " (packaged with --allow-failed)" if v.get("packaged_despite_failure") else ""
        unmeasured = [g["name"] for g in v.get("gates", []) if g.get("passed") is None]
        extra += f"; not measured there: {', '.join(unmeasured)}" if unmeasured else ""
        return f"recorded verdict: {v['verdict']} (edgeft verify{where}){extra}"

    def info(self) -> dict:
        m = self.meta
        v = m["verification"]
        return {"name": m["name"], "version": m["version"], "target": m["target"]["name"],
                "backend": m["target"]["backend"], "precision": m["target"]["precision"], "modality": m["modality"],
                "labels": m["labels"], "inputs": m["inputs"], "verdict": v["verdict"],
                "accuracy": v.get("accuracy"), "baseline_accuracy": v.get("baseline_accuracy"),
                "top1_agreement": v.get("top1_agreement"), "p50_ms": v.get("p50_ms"), "measured_on": v.get("host"),
                "gates": v.get("gates"), "golden_inputs": m["golden"]["count"], "signed": self.signed,
                "signature_checked_with": self.signer, "runtime": m["runtime"]["dependencies"],
                "files": len(m["files"]), "bytes": sum(f["bytes"] for f in m["files"]),
                "lineage": m["lineage"], "this_host": self._host_info()}

    def _host_info(self) -> dict:
        """This CPU's ISA class and ``host_fit``'s verdict on it, for ``info``."""
        from edgeft_runtime import hostinfo

        host = hostinfo.current()
        fit = self.host_fit(host)
        return {"cpu": host.cpu, "isa_class": host.isa_class, "isa_flags": host.isa_summary(),
                "int8_kernels": self.int8_kernels(),
                "fit": "ok" if fit is None else "wrong_results" if fit[0] == "refuse" else "other_isa",
                "message": fit[1] if fit else None}

    # running it --------------------------------------------------------------------------------------------
    @property
    def engine_dir(self) -> Path:
        return self.root / self.meta["engine"]["dir"]

    def session(self, threads: int | None = None):
        """The engine's session: ONNX Runtime for an ORT engine; for a TensorRT build kit, the engine built from
        the kit on this device (``trt_device.build_from_kit``, cached), run through TensorRT."""
        if self._session is None:
            eng = self.meta["engine"]
            if self.meta["target"]["backend"] == "tensorrt" and eng["deferred"]:
                from edgeft_runtime.trt_device import build_from_kit

                from edgeft_runtime.session import TrtSession

                self._session = TrtSession(build_from_kit(self))
            else:
                from edgeft_runtime.session import open_engine

                self.require_host_fit()       # Python callers must not get wrong results silently either
                self._session = open_engine(self.engine_dir, threads)
        return self._session

    def engine_name(self) -> str:
        return {"TrtSession": "TensorRT", "OpenVINOSession": "OpenVINO CPU"}.get(type(self.session()).__name__,
                                                                                "ONNX Runtime CPU")

    def preprocessor(self):
        if self._pre is None:
            from edgeft_runtime.inputs import preprocessor_for

            self._pre = preprocessor_for(self.engine_dir, self.meta["preprocessing"].get("max_length", 128))
        return self._pre

    def logits(self, inputs: Sequence, times_ms: list | None = None) -> np.ndarray:
        """Logits of each input (a text, or an image path for an image bundle) at batch 1, at its own length:
        exactly how verify ran the test split."""
        import time

        if isinstance(inputs, (str, Path)):        # one input, not a sequence of characters
            inputs = [inputs]
        if not inputs:
            return np.zeros((0, len(self.meta["labels"])), np.float32)
        sess, pre = self.session(), self.preprocessor()
        rows = []
        for x in inputs:
            feeds = pre([x], sess.input_names)
            t0 = time.perf_counter()
            out = sess.run(feeds)
            if times_ms is not None:
                times_ms.append((time.perf_counter() - t0) * 1000)
            rows.append(np.asarray(out.get("logits", next(iter(out.values()))))[0])
        return np.stack(rows).astype(np.float32)

    def predict(self, inputs: Sequence, top_k: int = 3) -> list[dict]:
        """One dict per input: ``label``, ``score`` (its probability) and the ``top_k`` labels with theirs."""
        labels = self.meta["labels"]
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if self.meta["task"] == "regression":
            return [{"input": str(x), "label": None, "score": float(row.reshape(-1)[0])}
                    for x, row in zip(inputs, self.logits(inputs))]
        out = []
        for x, row in zip(inputs, self.logits(inputs)):
            p = softmax(row.astype(np.float64))
            top = np.argsort(-p)[:max(1, top_k)]
            out.append({"input": str(x), "label": labels[top[0]], "score": round(float(p[top[0]]), 6),
                        "top_k": [{"label": labels[i], "score": round(float(p[i]), 6)} for i in top]})
        return out

    # the golden set ----------------------------------------------------------------------------------------
    def golden_inputs(self) -> list:
        rows = [json.loads(line) for line in (self.root / self.meta["golden"]["inputs"]).read_text(encoding="utf-8").splitlines() if line.strip()]
        if self.meta["modality"] == "image":
            return [str(self.root / safe_relpath(r["image"], "golden input")) for r in rows]
        return [r["text"] for r in rows]

    def check_tolerance(self, engine_logits: np.ndarray) -> float:
        """The recorded atol, after recomputing it from what it is derived from (``golden_atol``); BundleError
        naming the field when they disagree: bundle.json is not covered by the checksums, and a raised atol
        would let any engine pass."""
        tol = self.meta["golden"]["tolerance"]
        for key in ("measured_kernel_deviation", "quantization_floor"):
            if not _number(tol.get(key)) or tol[key] < 0:
                raise BundleError(f"bundle.json: golden.tolerance.{key} is missing or not a number >= 0, so "
                                  "golden.tolerance.atol cannot be checked", fix="get the bundle again from its source")
        kit = 0.0
        if "tensorrt_kit_floor" in tol:      # absent in kits made before the floor existed: their atol has none
            kit = kit_floor(engine_logits)
            recorded = tol.get("tensorrt_kit_floor")
            if not _number(recorded) or not np.isclose(recorded, kit, rtol=1e-9, atol=0):
                raise BundleError(f"bundle.json: golden.tolerance.tensorrt_kit_floor {tol.get('tensorrt_kit_floor')!r} "
                                  f"is not {KIT_FLOOR:.0%} of the golden set's largest |logit| ({kit:.6g}): bundle.json "
                                  "was edited", fix="do not install this bundle; get it again from its source")
        want = golden_atol(float(tol["measured_kernel_deviation"]), float(tol["quantization_floor"]), kit)
        atol = float(tol["atol"])
        if not np.isclose(atol, want, rtol=1e-9, atol=0):
            raise BundleError(f"bundle.json: golden.tolerance.atol {atol:.6g} is not what its measured_kernel_deviation "
                              f"and quantization_floor give ({want:.6g}): bundle.json was edited",
                              fix="do not install this bundle; get it again from its source")
        return atol

    def int8_kernels(self) -> str | None:
        """The int8 kernel flavour the engine was built in: engine.json's (covered by the checksums), else
        bundle.json's ``target.int8_kernels``; None for an engine that is not ONNX Runtime int8."""
        path = self.engine_dir / "engine.json"
        data = read_json(path) if path.is_file() else None
        built = data.get("int8_kernels") if isinstance(data, dict) else None
        return built or self.meta["target"].get("int8_kernels")

    def host_fit(self, host=None) -> tuple[str, str] | None:
        """Whether this CPU runs the engine as built: ("refuse", why) when its int8 kernels compute wrong sums
        here (u8s8 on AVX2, or AVX512 without VNNI); ("note", why) when it runs them correctly on another
        instruction set than the target's (only its speed differs); None when it fits or is not a CPU engine."""
        from edgeft_runtime import hostinfo

        t = self.meta["target"]
        device = t.get("device") or {}
        if device.get("kind", "cpu") != "cpu" or t["backend"] == "tensorrt":
            return None
        host = host or hostinfo.current()
        isa, cls = device.get("isa", "any"), host.isa_class
        if t["backend"] == "onnxruntime-cpu" and self.int8_kernels() == "u8s8" and cls in SATURATING_U8S8:
            return ("refuse", f"this bundle's engine ({t['name']}, target isa {isa}) uses u8s8 int8 kernels, and this "
                              f"CPU's int8 class is {cls}, without VNNI (flags: {host.isa_summary()}), where u8s8 "
                              "sums saturate: its results here would be wrong")
        if not hostinfo.matches(isa, host):
            return ("note", f"this bundle's engine targets isa {isa} and this CPU is {cls} ({host.isa_summary()}): "
                            "its results are correct here, its speed is not the target's")
        return None

    def require_host_fit(self, host=None) -> str | None:
        """``host_fit``: an EdgeftError for a refusal, else the note (or None)."""
        fit = self.host_fit(host)
        if fit and fit[0] == "refuse":
            raise EdgeftError(fit[1], fix=f"package the run for target {SAFE_TARGET} (`edgeft run ... --target "
                                          f"{SAFE_TARGET}`, then `edgeft package`), whose u8u8 engine is correct on "
                                          "this CPU; or run this bundle on a CPU with AVX512-VNNI or AVX-VNNI")
        return fit[1] if fit else None

    def truncated(self, inputs: Sequence) -> list[tuple[int, int, int]]:
        """(index, tokens, tokens dropped) of each text longer than the engine reads (preprocessing.max_length);
        empty for image bundles."""
        if self.meta["modality"] != "text":
            return []
        pre = self.preprocessor()
        limit = pre.max_length
        return [(i, n, n - limit) for i, n in enumerate(pre.token_counts([str(x) for x in inputs])) if n > limit]

    def check_golden(self) -> GoldenResult:
        """Run the golden inputs and compare with the engine outputs recorded at packaging: |Δlogit| within the
        bundle's tolerance everywhere, and the same top-1 wherever the recorded margin between the first and
        second logit exceeds twice the tolerance (below that, a difference of one tolerance on each logit
        could honestly swap them)."""
        g = self.meta["golden"]
        expected = read_json(self.root / g["expected"])
        want = np.asarray(expected["engine_logits"], np.float32)
        if want.size == 0:                     # an empty golden set: [] has no label axis to compare shapes on
            want = want.reshape(0, len(self.meta["labels"]))
        base = np.asarray(expected["baseline_logits"], np.float32) if expected.get("baseline_logits") else None
        inputs = self.golden_inputs()
        atol = self.check_tolerance(want)
        got = self.logits(inputs)
        if got.shape != want.shape:
            raise BundleError(f"the engine gave logits of shape {got.shape} for the golden set; the bundle recorded {want.shape}",
                              fix="the engine does not match its bundle.json: get the bundle again")
        diff = np.abs(got - want).max(-1) if len(want) else np.zeros(0)
        outside = [int(i) for i in np.nonzero(diff > atol)[0]]
        mism, checked = [], 0
        if self.meta["task"] == "classification" and want.shape[-1] > 1:
            sure = decisive(want, atol)
            checked = int(sure.sum())
            mism = [int(i) for i in np.nonzero(sure & (got.argmax(-1) != want.argmax(-1)))[0]]
        agree = float((got.argmax(-1) == base.argmax(-1)).mean()) if base is not None and len(base) else None
        # a check that compared no input (or no label) says nothing about the answers devices will give, so a
        # release pipeline gating on exit 0 must see a failure, not a PASS
        not_checked = None
        if not len(inputs):
            not_checked = "the golden set is empty: nothing was checked"
        elif self.meta["task"] == "classification" and want.shape[-1] > 1 and not checked:
            not_checked = (f"no golden input has a recorded top-1 margin above 2 x the tolerance ({2 * atol:.4g}), so "
                           "no top-1 label was checked")
        return GoldenResult(passed=not outside and not mism and not not_checked, inputs=len(inputs), atol=atol,
                            max_abs_diff=float(diff.max()) if len(diff) else 0.0, outside_tolerance=outside,
                            top1_checked=checked, top1_mismatches=mism, agreement_with_fp32_baseline=agree,
                            engine=self.engine_name(), not_checked=not_checked)


def read_inputs_file(path: Path, modality: str, flag: str = "--file") -> list[str]:
    """Inputs from a CSV (a ``text`` column; ``image``/``path`` for images) or JSON Lines file (one object per
    line, the same keys). ``flag`` names the option in messages."""
    return read_rows_file(path, modality, flag)[0]


def read_rows_file(path: Path, modality: str, flag: str = "--file") -> tuple[list[str], list[dict]]:
    """``read_inputs_file``'s inputs and the rows they came from (their other columns, e.g. a label)."""
    import csv

    path = Path(path)
    keys = ("text",) if modality == "text" else ("image", "path")
    want = f"a .csv or .jsonl file with a `{keys[0]}` column"
    if not path.is_file():
        raise EdgeftError(f"{flag} {path}: no such file", fix=f"pass {want}")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson", ".json")
    try:
        if jsonl:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            header = None
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows, header = list(reader), reader.fieldnames or []
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise EdgeftError(f"{flag} {path} could not be read: {e}", fix=f"pass {want} (UTF-8, a header row for CSV)") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise EdgeftError(f"{flag} {path}: line {bad} is not a JSON object", fix=f'write one object per line, e.g. {{"{keys[0]}": "..."}}')
    columns = header if header is not None else (list(rows[0]) if rows else [])
    key = next((k for k in keys if k in columns), None)
    if key is None:
        raise EdgeftError(f"{flag} {path} has no {' or '.join(repr(k) for k in keys)} column (found {sorted(columns)})",
                          fix=f"name the input column `{keys[0]}`")
    if not rows:
        raise EdgeftError(f"{flag} {path} has a `{key}` column but no rows", fix="add the inputs, one per row")
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get(key), str):
            what = "no value" if r.get(key) is None else f"a {type(r.get(key)).__name__}, not text"
            raise EdgeftError(f"{flag} {path}: row {i} has {what} in `{key}`", fix=f"give every row a text `{key}`")
    out = [r[key] for r in rows]
    if modality == "image":
        out = [str((path.parent / x) if not Path(x).is_absolute() else x) for x in out]
    return out, rows
