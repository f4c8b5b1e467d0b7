"""A real terminal for interactive programs in tests: a tmux session on a private server.

Tests type with `type_text`/`press` and wait for text on the screen (`wait_for`), never for time.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest


class TmuxSession:
    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, width: int = 200, height: int = 50) -> None:
        if shutil.which("tmux") is None:
            if os.environ.get("CI"):
                pytest.fail("tmux is required for the interactive Codex tests")
            pytest.skip("tmux is not installed")
        self.server = f"codexgate-test-{uuid.uuid4().hex[:10]}"  # a private tmux server: nothing else is touched
        # tmux starts the command through the server's environment: pass ours explicitly.
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        script = f"cd {shlex.quote(str(cwd))} && exec env -i {exports} {shlex.join(command)}"
        # remain-on-exit keeps the last screen of a program that exited, for the assertion to show.
        subprocess.run(
            ["tmux", "-L", self.server, "-f", "/dev/null", "new-session", "-d", "-s", "main",
             "-x", str(width), "-y", str(height), "bash", "-c", script],
            check=True,
        )  # fmt: skip
        subprocess.run(["tmux", "-L", self.server, "set-option", "-t", "main", "remain-on-exit", "on"], check=False)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, check=False)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", "main").stdout

    def scrollback(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", "main").stdout

    def wait_for(self, *texts: str, timeout: float = 60) -> str:
        """The screen once it shows every one of `texts` (polled); fails with the screen otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"screen never showed {texts!r}; it shows:\n{screen}")
            time.sleep(0.1)

    def wait_screen(self, check: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """The screen once `check(screen)` holds (polled); fails naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"screen never showed {what}; it shows:\n{screen}")
            time.sleep(0.1)

    def wait_until(self, text: str, timeout: float = 60, count: int = 1) -> str:
        """Like `wait_for`, over the scrollback too (long answers scroll): until `text` is there
        `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.scrollback()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"terminal never showed {text!r}; it shows:\n{screen}")
            time.sleep(0.1)

    def type_text(self, text: str) -> None:
        self._tmux("send-keys", "-t", "main", "-l", text)

    def press(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "main", key)

    def submit(self, text: str, shown: str | None = None, tries: int = 5) -> None:
        """Type `text`, wait until the composer shows it, then press Enter. Keys typed while the
        program is still setting its screen up can be lost: then the line is cleared (Ctrl-U) and
        typed again, a bounded number of times."""
        expected = shown or text[:40]
        for _ in range(tries):
            self.type_text(text)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if expected in self.screen():
                    self.press("Enter")
                    return
                time.sleep(0.1)
            self.press("C-u")
        pytest.fail(f"typed {text!r} never showed; the screen shows:\n{self.screen()}")

    def exited(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "main", "#{pane_dead}").stdout.strip() == "1"

    def command(self, command: str, expect: str | None, tries: int = 5) -> str:
        """Run a slash command and wait for `expect` on the screen (None: for the program to exit).
        The composer's command popup may still be filtering when Enter arrives (then Enter is not
        taken): Enter is pressed again, a bounded number of times, until `expect` shows."""
        self.type_text(command)
        self.wait_for(command)
        for _ in range(tries):
            self.press("Enter")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                screen = self.screen()
                if (expect in screen) if expect is not None else self.exited():
                    return screen
                time.sleep(0.1)
        pytest.fail(f"{command} never showed {expect or 'the exit'!r}; the screen shows:\n{self.screen()}")

    def press_until_gone(self, key: str, text: str, tries: int = 5) -> None:
        """Press `key` until `text` leaves the screen. Codex ignores keys for a moment after a
        dialog opens (against accidental approvals): a key not taken is pressed again, a bounded
        number of times."""
        for _ in range(tries):
            self.press(key)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if text not in self.screen():
                    return
                time.sleep(0.1)
        pytest.fail(f"{key} never closed {text!r}; the screen shows:\n{self.screen()}")

    def close(self) -> None:
        self._tmux("kill-server")
