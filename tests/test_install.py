"""Installing pcapreset: a machine without a C compiler still gets a working
pcapreset (every module as plain Python), and the sdist is complete.

The install runs offline: the fresh virtualenv sees only the packages the
build and the core need (numpy, click, setuptools, Cython, wheel), linked from
this test environment, and pip runs with ``--no-index --no-build-isolation``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import REPO, SAMPLES

from pcapreset._build import MODULES

DEMO = SAMPLES / "keepalive_race_node" / "backend.pcap"
#: what the offline build and the core need, as distribution names
BUILD_AND_CORE = ("numpy", "click", "setuptools", "cython", "wheel", "packaging")

pytestmark = pytest.mark.slow


def _source_tree(dst: Path) -> Path:
    """A copy of the checkout's tracked files (the build writes .c files into
    its source tree: never into the checkout)."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for f in filter(None, files):
        src = REPO / os.fsdecode(f)
        if src.is_file():
            (dst / os.fsdecode(f)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / os.fsdecode(f))
    return dst


def _link_dists(names: tuple[str, ...], into: Path) -> None:
    """Symlink each distribution's top-level files and its metadata into ``into``."""
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
        site = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            p = site / top
            if top.startswith("..") or not p.exists() or (into / top).exists():
                continue
            (into / top).symlink_to(p)


def _bare_venv(tmp_path: Path, dists: tuple[str, ...]) -> tuple[Path, str]:
    """A venv without pip under tmp_path whose site-packages sees only ``dists`` (linked
    from this interpreter's); returns its python and its site-packages."""
    deps = tmp_path / "deps"
    deps.mkdir()
    _link_dists(dists, deps)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(f"{deps}\n")
    return py, site


def test_install_without_a_compiler_runs_the_demo(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("Linux only")
    src = _source_tree(tmp_path / "src")
    py, site = _bare_venv(tmp_path, BUILD_AND_CORE)
    empty = tmp_path / "bin"  # PATH: no gcc, no cc
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PATH=str(empty), CC="/bin/false", CXX="/bin/false", PIP_NO_INDEX="1")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-v", "--no-index",
         "--no-deps", "--no-build-isolation", str(src)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    # the build said which modules stay plain Python, and why
    assert "not compiling pcapreset.track.flows" in pip.stdout + pip.stderr
    pkg = Path(site) / "pcapreset"
    assert not list(pkg.rglob("*.so")) and not list(pkg.rglob("*.c"))
    assert (pkg / "track" / "flows.py").exists()
    assert (pkg / "report" / "report.schema.json").exists()

    out = subprocess.run(
        [str(py.parent / "pcapreset"), "analyze", str(DEMO), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    here = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", str(DEMO), "--format", "json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got == json.loads(here.stdout)
    assert got["summary"]["by_cause"] == {"keepalive_race": 5}


def test_sdist_is_complete(tmp_path: Path) -> None:
    """The sdist carries what building and testing need, and nothing generated."""
    src = _source_tree(tmp_path / "src")
    (src / "pcapreset" / "track" / "flows.c").write_text("/* generated */\n")  # must stay out
    env = {**os.environ, "PCAPRESET_NO_COMPILE": "1"}
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "d")],
        cwd=src, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (sdist,) = (tmp_path / "d").glob("pcapreset-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in (
        "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py", "Makefile",
        "pcapreset/track/flows.pxd", "pcapreset/capture/sources.pxd",
        "pcapreset/report/report.schema.json",
        "tests/conftest.py", "tests/reference_decoder.py",
        "tests/golden/keepalive_race_node__backend.json",
        "sample_pcaps/keepalive_race_node/backend.pcap", "notebooks/explore.ipynb",
    ):  # fmt: skip
        assert need in names, need
    assert not [n for n in names if n.endswith((".c", ".so"))]
    assert "pcapreset/_built_sources.json" not in names


def test_build_wheels_gives_a_stripped_manylinux_wheel(tmp_path: Path) -> None:
    """scripts/build-wheels: a manylinux wheel, stripped, without .c files,
    that installs offline into a fresh virtualenv and runs the demo compiled."""
    if sys.platform != "linux" or not shutil.which("strip"):
        pytest.skip("Linux with binutils only")
    out = tmp_path / "dist"
    env = {**os.environ, "OUT": str(out), "PYTHONS": sys.executable, "TOOL_PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-wheels")],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("pcapreset-*.whl")
    assert "manylinux" in whl.name, whl.name
    assert list(out.glob("pcapreset-*.tar.gz"))
    import zipfile

    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        sos = [n for n in names if n.endswith(".so")]
        # every module of _build.MODULES compiled, nothing else
        assert sorted(
            n.split(".")[0].removeprefix("pcapreset/").replace("/", ".") for n in sos
        ) == (sorted(MODULES)), sos
        assert not [n for n in names if n.endswith(".c")]
        so = z.read(sos[0])
    f = tmp_path / "m.so"
    f.write_bytes(so)
    syms = subprocess.run(["readelf", "-S", str(f)], capture_output=True, text=True).stdout
    assert ".debug_info" not in syms and ".symtab" not in syms  # stripped

    py, site = _bare_venv(tmp_path, ("numpy", "click"))
    # (away from the checkout, whose pcapreset.egg-info pip would take for an
    # installed pcapreset, and without PYTHONPATH: the venv's own packages)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index",
         "--no-deps", str(whl)],
        check=True, timeout=300, cwd=tmp_path, env=clean,
    )  # fmt: skip
    check = subprocess.run(
        [str(py), "-c", "import pcapreset.track.flows as f, pcapreset.capture.sources as s; "
         "print(f.COMPILED and s.COMPILED, f.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=clean,
    )  # fmt: skip
    compiled, where = check.stdout.split()
    assert compiled == "True" and where.startswith(site), check.stdout + check.stderr
    demo = subprocess.run(
        [str(py.parent / "pcapreset"), "analyze", str(DEMO), "--format", "json"],
        capture_output=True, text=True, timeout=300, env=clean,
    )  # fmt: skip
    assert json.loads(demo.stdout)["summary"]["by_cause"] == {"keepalive_race": 5}
