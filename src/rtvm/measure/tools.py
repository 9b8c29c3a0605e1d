"""Locating the real tools, running them with time limits, and failing clearly.

- A missing tool is one line naming the Debian package that provides it (``ToolMissing``).
- A tool that fails, times out or prints something unexpected is one line with the tool's own
  last lines (``ToolFailed``).
- Background children (servers, load generators, qemu) run in their own process group and are
  tracked, so that ``cleanup_children()`` can end them all on exit, on errors and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from rtvm.cli_support import RunFailed, one_line

#: tool -> Debian package that provides it.
DEBIAN_PACKAGES: dict[str, str] = {
    "cyclictest": "rt-tests",
    "stress-ng": "stress-ng",
    "iperf3": "iperf3",
    "sockperf": "sockperf",
    "ip": "iproute2",
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "ldd": "libc-bin",
    "zstd": "zstd",
    "xz": "xz-utils",
}


class ToolMissing(RunFailed):
    """A program rtvm drives is not installed."""

    def __init__(self, tool: str) -> None:
        pkg = DEBIAN_PACKAGES.get(tool)
        hint = f"install the Debian package {pkg} (apt-get install {pkg})" if pkg else "install it"
        super().__init__(f"{tool} not found on PATH; {hint}")
        self.tool = tool


class ToolFailed(RunFailed):
    """A tool exited badly, timed out or printed something rtvm cannot read."""

    def __init__(self, tool: str, what: str, output: str = "", lines: int = 3) -> None:
        tail = last_lines(output, lines)
        msg = f"{tool} {what}"
        if tail:
            msg += f"; its last output: {tail}"
        super().__init__(one_line(msg))
        self.tool = tool
        self.output = output


def last_lines(text: str | bytes | None, n: int = 3) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-600:]


def which(tool: str) -> str:
    """The tool's path, or ToolMissing. ``RTVM_HIDE_TOOLS=a,b`` hides tools (fault tests)."""
    hidden = {t.strip() for t in os.environ.get("RTVM_HIDE_TOOLS", "").split(",") if t.strip()}
    path = None if tool in hidden else shutil.which(tool)
    if path is None:
        # sbin is not always on a user's PATH
        for d in ("/usr/sbin", "/sbin"):
            cand = Path(d) / tool
            if tool not in hidden and cand.exists() and os.access(cand, os.X_OK):
                return str(cand)
        raise ToolMissing(tool)
    return path


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    tool: str | None = None,
    check: bool = True,
    input_bytes: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion (in its own process group, killed whole on timeout)."""
    name = tool or Path(argv[0]).name
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(name) from exc
    _register(proc)
    try:
        out, err = proc.communicate(input=input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise ToolFailed(
            name, f"did not finish within {timeout:.0f} s", _dec(err) + _dec(out)
        ) from None
    except BaseException:
        kill_group(proc)
        raise
    finally:
        _unregister(proc)
    res = subprocess.CompletedProcess(list(argv), proc.returncode, _dec(out), _dec(err))
    if check and proc.returncode != 0:
        raise ToolFailed(name, f"exited with status {proc.returncode}", res.stderr + res.stdout)
    return res


def _dec(b: bytes | None) -> str:
    return (b or b"").decode("utf-8", "replace")


# -- background children ---------------------------------------------------------------------
_children: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


def _register(p: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.add(p)


def _unregister(p: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.discard(p)


def kill_group(p: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM the child's process group, wait ``grace`` seconds, then SIGKILL it."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=grace)
    # the leader may be gone while the group lives on (ip netns exec, shells): kill the group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)


class Background:
    """A long-running child (server, load, qemu): started in its own session, always ended.

    Output goes to ``log`` (a file) so that a failure can quote its last lines.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        *,
        tool: str | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> None:
        self.argv = list(argv)
        self.tool = tool or Path(argv[0]).name
        self.log = log
        self.env = env
        self._stdin = stdin
        self._stdout = stdout
        self.proc: subprocess.Popen[bytes] | None = None
        self._logfh: BinaryIO | None = None

    def start(self) -> Background:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._logfh = logfh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=self._stdin,
                stdout=self._stdout if self._stdout is not None else self._logfh,
                stderr=self._logfh,
                start_new_session=True,
                env=self.env,
            )
        except FileNotFoundError as exc:
            logfh.close()
            raise ToolMissing(self.tool) from exc
        _register(self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except OSError:
            return ""

    def check_alive(self, what: str = "exited early") -> None:
        if not self.alive():
            rc = self.proc.returncode if self.proc else None
            raise ToolFailed(self.tool, f"{what} (status {rc})", self.output())

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolFailed(
                self.tool, f"did not finish within {timeout:.0f} s", self.output()
            ) from None

    def stop(self, grace: float = 2.0) -> int | None:
        if self.proc is not None:
            kill_group(self.proc, grace)
            _unregister(self.proc)
        if self._logfh is not None:
            self._logfh.close()
            self._logfh = None
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cleanup_children() -> None:
    """End every child still running (called on exit, errors and Ctrl-C)."""
    with _lock:
        kids = list(_children)
    for p in kids:
        kill_group(p, grace=1.0)
        _unregister(p)


def tool_version(
    tool: str, args: Sequence[str] = ("--version",), timeout: float = 10
) -> str | None:
    """First non-empty line of ``tool --version`` (or None when unavailable)."""
    try:
        path = which(tool)
        r = subprocess.run(
            [path, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (RunFailed, OSError, subprocess.TimeoutExpired):
        return None
    for ln in (r.stdout + "\n" + r.stderr).splitlines():
        ln = ln.strip()
        if ln:
            return ln[:120]
    return None


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred()`` until true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


@contextlib.contextmanager
def children_cleaned() -> Iterator[None]:
    """Context in which every child started is ended on the way out, whatever happens."""
    try:
        yield
    finally:
        cleanup_children()
