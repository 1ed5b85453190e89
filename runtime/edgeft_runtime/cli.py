"""``edgeft-runtime``: the device side of an edgeft bundle (folder or .tar.gz).

    edgeft-runtime info BUNDLE                  what it is, the verdict it was released with
    edgeft-runtime check BUNDLE [--public-key]  every checksum (and the signature), then the golden set
    edgeft-runtime predict BUNDLE TEXT... | --file inputs.csv|jsonl | IMAGE...   JSON lines out
    edgeft-runtime bench BUNDLE [--sweep batch=1,8 --sweep seq=32,128 ...]      latency, memory, accuracy here

Exit codes: 0 ok, 1 error or a failed check, 2 usage error. Every command prints the bundle's recorded
verdict on stderr (stdout stays machine-readable).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeft_runtime.errors import EdgeftError


class UsageError(EdgeftError):
    """A command line argparse refused: printed like every other error, exit 2."""

    exit_code = 2


# options of the host's `edgeft bench RUN_DIR` that users carry over to a bundle, and what to do instead
HOST_ONLY = {"--engines": "a bundle is benchmarked with the engines it holds (pass --with-reference to `edgeft "
                          "package` to bundle the FP32 reference); compare other engines with `edgeft bench RUN_DIR "
                          "--engines ...` on the build machine",
             "--target": "a bundle holds one target's engine: pass that target's bundle",
             "--data": "a bundle is checked on its golden set"}


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ``error: ...`` + ``fix: ...`` (UsageError) instead of its own usage dump."""

    def options(self) -> list[str]:
        return [o for a in self._actions for o in a.option_strings if o not in ("-h", "--help")]

    def subparser(self, command: str | None) -> "Parser":
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction) and command in a.choices:
                return a.choices[command]
        return self

    def error(self, message: str):
        usage = " ".join(self.format_usage().split())         # one line: argparse wraps it
        raise UsageError(f"{self.prog}: {message}", fix=f"{usage.removeprefix('usage: ')} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            p = self.subparser(getattr(ns, "command", None))
            hint = next((HOST_ONLY[a.split("=")[0]] for a in extra if a.split("=")[0] in HOST_ONLY), None)
            valid = f"{p.prog} takes {', '.join(p.options()) or 'no options'}"
            raise UsageError(f"{p.prog}: unrecognized arguments: {' '.join(extra)}",
                             fix=f"{hint}; {valid}" if hint else valid)
        return ns


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="the bundle folder or its .tar.gz")
    p.add_argument("--public-key", type=Path, default=None,
                   help="refuse the bundle unless its signature verifies with this Ed25519 public key (PEM)")


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="edgeft-runtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from edgeft_runtime import __version__

    ap.add_argument("--version", action="version", version=f"edgeft-runtime {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what the bundle is and the verdict it was released with")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON only")
    p = sub.add_parser("check", help="checksums, signature, then the golden set through the engine (exit 0/1)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("predict", help="classify texts (or images); one JSON object per input")
    _common(p)
    p.add_argument("inputs", nargs="*", help="texts, or image paths for an image bundle")
    p.add_argument("--file", type=Path, help="CSV or JSON Lines with a `text` column (`image` for images)")
    p.add_argument("--top-k", type=int, default=3)
    p = sub.add_parser("bench", help="time the bundle's engine(s) on this device: latency, throughput, memory, "
                                     "cold start, accuracy per batch size (bench.json/.md/.csv)")
    _common(p)
    from edgeft_runtime.bench import add_arguments

    add_arguments(p)
    return ap


def _info(bundle, args) -> int:
    info = bundle.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']} {info['version']}: {info['target']} ({info['backend']}, {info['precision']}), "
          f"{info['modality']}, {len(info['labels'])} labels")
    print("inputs: " + ", ".join(f"{i['name']} {i['dtype']} {i.get('min')}..{i.get('max')}" for i in info["inputs"]))
    acc = info["accuracy"]
    if acc is not None:
        print(f"released with: accuracy {acc:.4f} (FP32 baseline {info['baseline_accuracy']:.4f}), "
              f"top-1 agreement {info['top1_agreement']:.4f}"
              + (f", p50 {info['p50_ms']:.3g} ms" if info["p50_ms"] is not None else ""))
    for g in info["gates"] or []:
        state = "not measured" if g.get("passed") is None else "passed" if g["passed"] else "FAILED"
        print(f"  gate {g['name']}: {state} ({g.get('value')} {g.get('op')} {g.get('threshold')})")
    print(f"files: {info['files']} ({info['bytes'] / 1e6:.1f} MB), golden set: {info['golden_inputs']} inputs, "
          f"signed: {'yes' if info['signed'] else 'no'}")
    print(f"needs: {', '.join(info['runtime'])}")
    here = info["this_host"]
    if here["message"]:
        print(f"{'warning' if here['fit'] == 'wrong_results' else 'note'}: {here['message']}")
    print(bundle.verdict_line())
    return 0


def _check(bundle, args) -> int:
    m = bundle.meta
    sig = (f"signature verified (key {bundle.signer[:16]}…)" if bundle.signer else
           "signed, signature not checked (pass --public-key)" if bundle.signed else "not signed")
    golden = bundle.check_golden()
    line = (f"{'PASS' if golden.passed else 'FAIL'} {m['name']}: {len(m['files'])} files intact, {sig}; "
            + golden.line().split(' ', 1)[1])
    if args.json:
        print(json.dumps({"passed": golden.passed, "name": m["name"], "files": len(m["files"]),
                          "signature": "verified" if bundle.signer else "present" if bundle.signed else "none",
                          "recorded_verdict": m["verification"]["verdict"], "golden": golden.__dict__}, indent=2))
    else:
        print(line)
    return 0 if golden.passed else 1


def _predict(bundle, args) -> int:
    from edgeft_runtime.bundle import read_inputs_file

    inputs = list(args.inputs)
    if args.file:
        inputs += read_inputs_file(args.file, bundle.meta["modality"])
    if not inputs:
        raise EdgeftError("nothing to predict", fix="pass texts after the bundle, or --file inputs.csv")
    if args.top_k < 1:
        raise EdgeftError(f"--top-k {args.top_k}: must be at least 1", fix="pass --top-k 3")
    if bundle.meta["modality"] == "text" and any(not str(x).strip() for x in inputs):
        print("warning: an empty input: the engine still answers, from no words at all", file=sys.stderr)
    if bundle.meta["modality"] == "image":
        missing = [x for x in inputs if not Path(x).is_file()]
        if missing:
            raise EdgeftError(f"no such image: {missing[0]}", fix="pass paths of image files")
    cut = bundle.truncated(inputs)
    if cut:
        limit = bundle.preprocessor().max_length
        each = ", ".join(f"input {i + 1} lost {d} of its {n}" for i, n, d in cut[:5]) + (", ..." if len(cut) > 5 else "")
        print(f"warning: {len(cut)} input(s) longer than the engine's {limit} tokens were cut, {sum(c[2] for c in cut)} "
              f"tokens dropped ({each}): their predictions read only the first {limit}", file=sys.stderr)
    for row in bundle.predict(inputs, args.top_k):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        args = parser().parse_args(argv)
        from edgeft_runtime.bundle import Bundle

        with Bundle.open(args.bundle, args.public_key) as bundle:
            if not (args.command == "info" and not args.json):
                print(bundle.verdict_line(), file=sys.stderr)
            if args.command != "info":              # info reports the fit; the others must not run a wrong engine
                note = bundle.require_host_fit()
                if note:
                    print(f"note: {note}", file=sys.stderr)
            if args.command == "bench":
                from edgeft_runtime.bench import run_cli

                code = run_cli(bundle, args)
            else:
                code = {"info": _info, "check": _check, "predict": _predict}[args.command](bundle, args)
    except EdgeftError as e:
        print(f"error: {e}", file=sys.stderr)        # the fix is printed under the message
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
