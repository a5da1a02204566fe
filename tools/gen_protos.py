"""Generate the gRPC code from protos/ into one package (`make protos`).

With --check, generate into a temporary directory and fail when the committed
code differs (CI runs this so stale generated code never lands).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
HEADER = "Generated from protos/ by `make protos`. Do not edit by hand.\n"


def generate(out_root: Path, package: str) -> Path:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_root / package
    for directory in [pkg, *[d for d in pkg.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(f'"""{HEADER.strip()}"""\n')
    return pkg


def differences(committed: Path, fresh: Path) -> list[str]:
    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    old, new = files(committed), files(fresh)
    found = [f"{n} (only in committed)" for n in sorted(old.keys() - new.keys())]
    found += [f"{n} (missing)" for n in sorted(new.keys() - old.keys())]
    found += [f"{n} (differs)" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("package", nargs="?", default="storyshort")
    parser.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    target = ROOT / ns.package
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), ns.package)
        if ns.check:
            if not target.exists():
                print(f"{ns.package}/ is missing: run `make protos`", file=sys.stderr)
                return 1
            diff = differences(target, fresh)
            if diff:
                print("generated code is stale, run `make protos`:", file=sys.stderr)
                for line in diff:
                    print(f"  {line}", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh, target)
        print(f"generated {ns.package}/ from protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
