"""Every shell and Python block of README.md and docs/*.md runs as written (issue 26).

Blocks are found in the files at collection time, so a block added to any page is tested with no
change here. Each runs in a fresh folder ``<tmp>/run`` whose parent holds ``shared`` (a link to
the shared data), so ``../shared/data/...`` resolves as it does from the repository root. By
default ``run`` also links the repository's top-level entries (``docs/``, ``ctblend/``, …): the
block runs as from the repository root, without writing into it. A block preceded by the HTML
comment ``<!-- doc-test: any directory -->`` runs in a bare ``run`` (only ``../shared``): the page
promises it works from anywhere.

Fast blocks run as written. Long ones (diffusion methods, training, benchmarks, the full demo)
are marked ``slow`` and run reduced (:func:`_reduced_command`, :data:`PYTHON_REDUCTIONS`: fewer
steps, slices and NFE; every other option as written), each within ``SLOW_TIMEOUT_S``; the
whole file took 5 min 15 s on 2 busy cores (``pytest -m "not slow"`` leaves the long ones out).
:data:`SKIP` lists, with the reason, the commands (shell) and blocks (Python) that cannot run
here; the rest of a shell block still runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, shared_dir

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL, PYTHON = {"bash", "sh", "shell", "console"}, {"python", "py"}
ANY_DIRECTORY = "<!-- doc-test: any directory -->"
FAST_TIMEOUT_S, SLOW_TIMEOUT_S = 300, 1800

#: (page, text of a command) → why that command (a shell block's line; a whole Python block)
#: cannot run here. Nothing else is skipped.
SKIP = {
    # README's set-up lines create .venv and pip-install the package (network, minutes) and run
    # the demo / the whole suite: .ci/run executes the test line on a clean clone.
    ("README.md", ".venv/bin/ctblend demo"): "installs the package; the CI script runs it",
    ("README.md", ".venv/bin/python -m pytest -q"): "runs this suite; the CI script runs it",
    ("quickstart.md", ".venv/bin/pip install"): "installs the package (pip, network)",
    # They write into the repository: the shipped FBP-UNet weights and the figures of docs/.
    ("results.md", "--export ctblend/weights/"): "overwrites the shipped networks of the repo",
    ("results.md", "make_doc_figures.py"): "redraws docs/img of the repository",
    # Fragments and examples that need what this machine lacks (owners: see issue 26's report).
    ("operators.md", "y = A(x)  # (..., 128, 128)"): "fragment: x is not defined",
    ("operators.md", "vol = ops.volume((Z, H, W)"): "fragment: Z, H, W, angles are not defined",
    ("operators.md", "import deepinv"): "needs deepinv, which is not installed (see the page)",
    ("training.md", 'files = ["data/ct/vol01.h5"'): "example paths data/ct/vol01.h5 do not exist",
    ("training.md", "# train_prior.py"): "a script for torchrun on a GPU node (paper256)",
    ("training.md", "start_step="): "continues the multi-session run thousands of steps in "
    "(--steps 2 cannot shorten it); tests/test_training_recipe.py tests start_step",
    ("training.md", 'prior = load_prior("runs/blendpp_cpu128"'): "needs a trained run folder",
}

#: Long blocks: a marker of cost. A block without one runs as written in the default suite.
SLOW = re.compile(
    r"ctblend (demo(?! --quick)|train|bench(?! --quick)|sample)|torchrun|diffusionblend|\bdds\b"
    r"|load_prior|DataLoader|sample_unconditional|python -m ctblend\.baselines"
)

BENCH_REDUCED = "--z-range 50 53 --sirt-iterations 2 --tv-iterations 2"  # 3 of ≥ 85 slices
PYTHON_REDUCTIONS = (
    (r"\bnfe=\d+", "nfe=2"),
    (r"range\(10\)", "range(1)"),
    (r"\((27|36), 128", "(3, 128"),
)


def _reduced_command(line: str) -> str:
    """One shell command with fewer steps, slices, processes and NFE (its comment kept)."""
    code, comment = re.match(r"(.*?)(\s+#.*)?$", line).groups()
    code = re.sub(r"--(nfe|steps|nproc_per_node) \d+", lambda m: f"--{m[1]} 2", code)
    code = re.sub(r"--n-slices \d+", "--n-slices 3", code)  # a blend++ partition needs 3
    extra = []
    if "ctblend demo" in code:
        extra += [] if "--quick" in code else ["--quick"]
    if re.search(r"ctblend train(?!-)", code) and "--steps" not in code:
        extra.append("--steps 2")
    if re.search(r"ctblend (recon|sample)", code):
        code = re.sub(r"\bnfe=\d+", "nfe=2", code)
        diffusion = re.search(r"diffusionblend|dds|ctblend sample", code)
        if diffusion and "--nfe" not in code and "nfe=" not in code:
            extra.append("--nfe 2")
    if "ctblend bench" in code and "--quick" not in code:  # --quick is small already
        extra += [BENCH_REDUCED] + ([] if "--nfe" in code else ["--nfe 2"])
    if "ctblend demo" in code and "--nfe" not in code:
        extra.append("--nfe 2")
    return " ".join([code, *extra]) + (comment or "")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str
    anywhere: bool

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"

    def skipped(self) -> dict[str, str]:
        """Skipped command → reason, for the commands of this block that match :data:`SKIP`."""
        reasons = {}
        for line in self.commands():
            for (page, marker), reason in SKIP.items():
                if self.page.name == page and marker in line:
                    reasons[line] = reason
        return reasons

    def commands(self) -> list[str]:
        """A shell block's commands (continuation lines joined); a Python block as one."""
        if self.language in PYTHON:
            return [self.text]
        return self.text.replace("\\\n", " ").splitlines()

    def kept(self) -> str:
        """The block as written less the skipped commands."""
        skipped = self.skipped()
        kept = [c for c in self.commands() if c not in skipped]
        return "\n".join(kept) + ("" if self.language in PYTHON else "\n")

    @property
    def slow(self) -> bool:
        return bool(SLOW.search(self.kept()))

    def runnable(self) -> str:
        """What runs: :meth:`kept`, reduced when slow (fewer steps, slices, processes, NFE)."""
        text = self.kept()
        if not self.slow:
            return text
        if self.language in PYTHON:
            for pattern, replacement in PYTHON_REDUCTIONS:
                text = re.sub(pattern, replacement, text)
            return text
        return "\n".join(_reduced_command(line) for line in text.splitlines()) + "\n"


def blocks() -> list[Block]:
    """The fenced shell and Python blocks of every page, in page order."""
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            match = re.fullmatch(r"```(\w*)\s*", lines[i])
            if not match:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            language = match[1].lower()
            if language in SHELL | PYTHON:
                anywhere = i > 0 and lines[i - 1].strip() == ANY_DIRECTORY
                text = "\n".join(lines[i + 1 : end]) + "\n"
                found.append(Block(page, i + 1, language, text, anywhere))
            i = end + 1
    return found


def _params() -> list:
    params = []
    for block in blocks():
        marks = [pytest.mark.slow] if block.slow else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


def _folder(tmp_path: Path, block: Block) -> Path:
    """``tmp/run`` beside ``tmp/shared``; as the repository root unless the block runs anywhere."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "shared").symlink_to(shared_dir())
    if not block.anywhere:
        for entry in REPO_ROOT.iterdir():
            if entry.name != ".git":
                (run / entry.name).symlink_to(entry)
    return run


@pytest.mark.parametrize("block", _params())
def test_documented_block_runs(block: Block, tmp_path):
    text = block.runnable()
    if not re.search(r"^\s*[^#\s]", text, re.M):
        pytest.skip(f"cannot run here: {'; '.join(sorted(set(block.skipped().values())))}")
    slow = block.slow
    if "../shared" in block.text and not any((shared_dir() / "data").glob("*/*")):
        pytest.skip(f"needs the shared data in {shared_dir() / 'data'}")
    run = _folder(tmp_path, block)
    if block.language in PYTHON:
        command = [sys.executable, "-c", text]
    else:
        command = ["bash", "-euo", "pipefail", "-c", text]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CI": "true",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        command,
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=SLOW_TIMEOUT_S if slow else FAST_TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{block.name} failed:\n{text}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def test_every_skip_names_a_block_that_exists():
    """A skip whose block was edited away would silently skip nothing; it must match."""
    found = blocks()
    for page, marker in SKIP:
        assert any(b.page.name == page and any(marker in c for c in b.commands()) for b in found), (
            page,
            marker,
        )


def test_quickstart_demo_table_is_the_one_the_demo_prints():
    """The quickstart's demo table has the columns of the table ``ctblend demo`` prints."""
    from ctblend.demo import score_table

    header = score_table({}, {}).splitlines()[0]
    assert header in (REPO_ROOT / "docs" / "quickstart.md").read_text().splitlines()
