"""Links in the README and docs/ point at files inside the repository (an
sdist or a clone has nothing next to it)."""

from __future__ import annotations

import re

from conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_resolve_inside_the_repository() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the page
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(REPO), f"{page.name}: {target} is outside the repository"
            assert path.exists(), f"{page.name}: {target} does not exist"
            checked += 1
    assert checked > 5  # the pages do link to each other


def test_readme_demo_output_is_the_real_output() -> None:
    """The README's quickstart shows what `make demo` prints, to the byte."""
    import subprocess
    import sys

    cmd = "pcapreset analyze sample_pcaps/keepalive_race_node/backend.pcap"
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"$ {cmd}\n") + len(f"$ {cmd}\n")
    shown = readme[start : readme.index("```", start)]
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", *cmd.split()[1:]],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    assert shown == out.stdout


def test_php_fpm_example_shows_the_real_output() -> None:
    """docs/causes/backend_crash_php_fpm_example.txt shows what its command prints."""
    import subprocess
    import sys

    doc = (REPO / "docs" / "causes" / "backend_crash_php_fpm_example.txt").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("# pcapreset analyze -v "))
    args = line[len("# pcapreset ") :].split()
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.strip() and out.stdout in doc
