"""Build a Python probe into a probehost probe component.

    python -m probehost_sdk build my_probe.py -o my_probe.wasm
    python -m probehost_sdk build my_probe -p src -o my_probe.wasm
    python -m probehost_sdk wit            # where the WIT package is

``build`` runs ``componentize-py`` (``pip install 'probehost[sdk]'``) against the
WIT package shipped inside this SDK, so the component targets exactly the probe
world this SDK release was written for. Check the result with
``probehost plugin check my_probe.wasm``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

_PACKAGE_DIR = Path(__file__).resolve().parent


def wit_dir() -> Path:
    """The WIT package this SDK targets (shipped inside the package)."""
    path = _PACKAGE_DIR / "wit"
    if not (path / "probe.wit").is_file():
        raise SystemExit(f"probehost_sdk: the WIT package is missing from {path}")
    return path


def world() -> str:
    """The probe world's fully qualified name, read from the WIT package."""
    text = (wit_dir() / "probe.wit").read_text(encoding="utf-8")
    package = re.search(r"^package\s+([^;@\s]+)(@[^;\s]+)?\s*;", text, re.M)
    name = re.search(r"^world\s+([\w-]+)", text, re.M)
    if not package or not name:
        raise SystemExit("probehost_sdk: probe.wit declares no package or world")
    return f"{package.group(1)}/{name.group(1)}{package.group(2) or ''}"


def _componentize_py() -> List[str]:
    exe = shutil.which("componentize-py")
    if exe:
        return [exe]
    beside = Path(sys.executable).with_name("componentize-py")
    if beside.exists():
        return [str(beside)]
    raise SystemExit(
        "probehost_sdk: componentize-py is not installed; "
        "install it with: pip install 'probehost[sdk]'"
    )


def build(module: str, output: Path, paths: List[Path]) -> int:
    """Componentize MODULE (a ``name.py`` file or a module name found on
    ``paths``) into OUTPUT."""
    search = list(paths)
    if module.endswith(".py"):
        file = Path(module)
        if not file.is_file():
            raise SystemExit(f"probehost_sdk: no such file: {module}")
        search.insert(0, file.resolve().parent)
        module = file.stem
    if not search:
        search = [Path.cwd()]
    with tempfile.TemporaryDirectory(prefix="probehost-sdk-") as tmp:
        # Only the SDK itself goes into the component, not the rest of the
        # environment it is installed in (which componentize-py would bundle).
        sdk = Path(tmp) / "probehost_sdk"
        shutil.copytree(
            _PACKAGE_DIR,
            sdk,
            ignore=shutil.ignore_patterns("wit", "__main__.py", "__pycache__"),
        )
        command = _componentize_py() + [
            "-d",
            str(wit_dir()),
            "-w",
            world(),
            "componentize",
            "-p",
            tmp,
        ]
        for path in search:
            command += ["-p", str(path)]
        command += [module, "-o", str(output)]
        return subprocess.call(command)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probehost_sdk",
        description="Build Python readiness probes into probehost probe components.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build a probe module into a component")
    b.add_argument("module", help="the probe: a file (redis_probe.py) or a module name")
    b.add_argument("-o", "--output", required=True, type=Path, help="the component to write")
    b.add_argument(
        "-p",
        "--path",
        action="append",
        default=[],
        type=Path,
        help="a directory to find the module and its imports in (repeatable)",
    )
    commands.add_parser("wit", help="print where the WIT package and world are")
    args = parser.parse_args(argv)
    if args.command == "wit":
        print(wit_dir())
        print(world())
        return 0
    return build(args.module, args.output, args.path)


if __name__ == "__main__":
    sys.exit(main())
