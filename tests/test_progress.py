"""bam._progress: tqdm on a terminal, one line per stage (no carriage returns) elsewhere, bars
closed on Ctrl-C so the error line starts a fresh line; `bam --version`; OS error messages."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bam import __version__
from bam._progress import close_open_bars, progress_bar
from bam.cli.main import cli, os_error_message


class Tty(io.StringIO):
    """A stderr that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def test_off_a_terminal_one_line_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress_bar(range(5), desc="stage a", enabled=True)) == list(range(5))
    with progress_bar(total=3, desc="stage b", enabled=True, initial=1) as bar:
        bar.update(2)
        bar.set_postfix(loss="0.5")
    for _ in progress_bar(range(4), desc="epoch", enabled=True, leave=False):  # transient: no line
        pass
    for _ in progress_bar(range(4), desc="off", enabled=False):
        pass
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue() and len(lines) == 2
    assert lines[0].startswith("stage a: 5/5 done in ") and lines[1].startswith("stage b: 3/3 done in ")
    assert lines[1].endswith(", loss=0.5")


def test_on_a_terminal_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm import tqdm

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress_bar(range(3), desc="stage", enabled=True)
    assert isinstance(bar, tqdm)
    list(bar)
    assert "\r" in err.getvalue() and "stage" in err.getvalue()


def test_interrupt_closes_open_bars_so_the_error_starts_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    it = iter(progress_bar(range(10), desc="epoch 1/3", enabled=True, leave=False))
    next(it)
    next(it)  # the bar is drawn, no newline yet
    assert not err.getvalue().endswith("\n")
    assert close_open_bars() == 1
    assert err.getvalue().endswith("\r") and err.getvalue().rstrip("\r").endswith(" ")  # the line is cleared
    assert close_open_bars() == 0
    off = io.StringIO()  # off a terminal an interrupted stage writes nothing (no half-finished line)
    monkeypatch.setattr(sys, "stderr", off)
    bar = progress_bar(total=5, desc="quiet", enabled=True)
    bar.update(1)
    assert close_open_bars() == 0 and off.getvalue() == "" and bar.closed


def test_ctrl_c_in_a_command_is_one_line_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bam.data.build as build

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "draw_placements", interrupt)
    res = CliRunner().invoke(cli, ["build-data", "--recipe", "tiny", "--out", str(tmp_path / "o")])
    assert res.exit_code == 130
    lines = res.output.splitlines()
    assert lines[-1] == "error: interrupted; re-run the same command to resume"
    assert all("\r" not in line for line in lines) and lines[0].startswith("classes: 6/6 done in")


def test_version_and_one_line_usage_errors() -> None:
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"bam, version {__version__}"
    res = CliRunner().invoke(cli, ["train", "--epochs", "x"])
    assert res.exit_code == 2
    assert res.output == ("error: Invalid value for '--epochs': 'x' is not a valid integer "
                          "(see `bam train --help`)\n")
    res = CliRunner().invoke(cli, [])
    assert "Usage: bam" in res.output and "Commands:" in res.output  # bare `bam` still shows the help


def test_os_error_message_names_the_file() -> None:
    assert os_error_message(OSError(28, "No space left on device", "/x/y.png")) == "No space left on device: /x/y.png"
    assert os_error_message(PermissionError(13, "Permission denied")) == "Permission denied"
    assert os_error_message(OSError(18, "Invalid cross-device link", "a", None, "b")) == \
        "Invalid cross-device link: a -> b"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")
def test_ctrl_c_line_is_not_glued_to_a_terminal_bar(tmp_path: Path) -> None:
    """In a real pseudo-terminal: a build interrupted while its tqdm bar is drawn prints the bar's
    line, a line break, then the error line."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    script = (
        "import sys, bam.data.build as b\n"
        "real, calls = b.run_unit, []\n"
        "def unit(args):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        raise KeyboardInterrupt\n"
        "    return real(args)\n"
        "b.run_unit = unit\n"
        "from bam.cli.main import main\n"
        f"sys.argv = ['bam', 'build-data', '--recipe', 'tiny', '--out', {str(tmp_path / 'out')!r}]\n"
        "main()\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: a 100-column terminal, the repository on sys.path
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
            os.chdir(Path(__file__).resolve().parents[1])
            os.execv(sys.executable, [sys.executable, "-c", script])
        finally:
            os._exit(99)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    text = out.decode()
    assert "classes:" in text and "1/6" in text  # the bar was drawn
    before, sep, after = text.partition("error: interrupted; re-run the same command to resume")
    assert sep and before.endswith("\n") and after.strip() == ""


def test_every_progress_bar_goes_through_bam_progress() -> None:
    """Only bam/_progress.py may use tqdm: anything else would redraw `\\r` frames into a log file."""
    import re

    root = Path(__file__).resolve().parents[1] / "bam"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if p.name != "_progress.py" and re.search(r"^\s*(from|import)\s+tqdm", p.read_text(), re.M))
    assert users == []
