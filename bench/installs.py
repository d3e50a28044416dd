"""deskbot as `pip install` leaves it, once per source tree, for side-by-side timings.

A source tree on PYTHONPATH is not a fair stand-in: the project's editable
install maps `deskbot.*` to this checkout, so a module the other tree lacks
is taken from here, and its finder costs start-up time an installed deskbot
does not have. Each tree is built as a wheel and installed (without its
dependencies) into a venv of its own; that venv sees this project's .venv
for the dependencies through a .pth line, which adds the folder but not the
.pth files in it, so the editable install stays out.

    tree = "/tmp/deskbot-old"     # e.g. `git worktree add /tmp/deskbot-old HEAD~3`
    deskbot = install(tree, workdir)  # -> workdir/venv-<n>/bin/deskbot
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(tree: str | Path, workdir: Path) -> Path:
    """Build `tree` (a folder with pyproject.toml) as a wheel and install it in a new venv."""
    source = Path(tree).resolve()
    if not (source / "pyproject.toml").is_file():
        raise SystemExit(f"{source}: not a project tree (no pyproject.toml)")
    n = len(list(workdir.glob("venv-*")))
    venv, wheels = workdir / f"venv-{n}", workdir / f"wheels-{n}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    wheel = next(wheels.glob("deskbot-*.whl"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True,
    )
    (site / "deskbot-bench-deps.pth").write_text(f"{Path(sysconfig.get_path('purelib'))}\n")
    # the console script, as pip writes it for a venv: its entry point from the wheel
    entry = configparser.ConfigParser()
    entry.read(next(site.glob("deskbot-*.dist-info")) / "entry_points.txt")
    module, function = entry["console_scripts"]["deskbot"].split(":")
    script = venv / "bin" / "deskbot"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\n"
        f"sys.exit({function}())\n"
    )
    script.chmod(0o755)
    # byte-compile as pip does by default (this environment may set PYTHONDONTWRITEBYTECODE)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(site)], check=True)
    return script
