"""The code blocks of README.md and docs/*.md run as written.

Every fenced block must say what it holds (```` ```sh ````, ```` ```text ````, ...): an untyped
fence fails. Blocks are checked by language, each as far as this machine allows:

- ``python``: compiled; then run in a subprocess against a real ``tidings serve`` (the port
  ``6001`` in the text becomes the test server's port, nothing else changes);
- ``js``: ``node --check``; a pusher-js block (``new Pusher(``) also runs in Node with the real
  pusher-js against the test server, and must connect;
- ``toml``: ``tidings check-config`` accepts it;
- ``json``: parses;
- ``sh`` (also ``bash``, ``shell``, ``console``): each command runs in a temporary directory
  that holds a ``tidings.toml`` with the docs' apps, with the venv's ``tidings`` first on
  PATH. ``tidings serve ...`` is started in a process group of its own, must answer
  ``/ready`` and log ``listening on`` once per worker, then gets SIGTERM and must exit 0.
  Other ``tidings`` commands must exit 0. Any other program fails the test until this file
  learns how to run it here (or the block is marked, below). What changes in the text, and
  nothing else: ``6001`` becomes a free port, ``0.0.0.0`` becomes ``127.0.0.1`` (tests bind
  loopback only), and ``redis://HOST:6379`` becomes the test's redis-server. A server
  started without ``--port`` gets its free port from ``TIDINGS_PORT``;
- ``text``, ``nginx``: shown, not run (output samples, listings, other programs' config).

A block that cannot run here is marked in the Markdown, on the line before its fence, with
``<!-- snippet: no-run (the reason) -->``; it is still compiled or syntax-checked where the
language allows. The reason is required, two words at least, and says what stops the block
(needs Flask, needs root, takes 40 minutes...). A marked shell block must hold at least one
command this file cannot run (one not in ``RUNNABLE``): a block whose commands all run here
loses its marker (in a story, the programs of ``STORY_RUNNABLE`` run too). To add a doc:
tag every fence; run this file; mark what cannot run, with its reason.

Stories: apps as files, run by real servers, checked by real clients
---------------------------------------------------------------------
A section of a doc (from one ``## `` heading to the next) that holds a block marked
``<!-- snippet: file NAME -->`` is a story. Its blocks run in order, in one temporary
directory, by ``test_story`` (the tests above still compile or check each of them, and
run none):

- a block marked ``<!-- snippet: file NAME -->`` is written to ``NAME`` (Python is
  compiled first);
- ``sh``: each command runs in the story's directory. A server (``tidings serve``,
  ``uvicorn``, ``gunicorn``) starts in a process group of its own and stays up until the
  story ends; the story goes on once its port accepts connections (``/ready`` for
  ``tidings serve``). At the end it gets SIGTERM and must exit 0 (uvicorn: or re-raise
  the signal once shut down). Other commands (``curl``, ``django-admin``, ``tidings ...``)
  must exit 0. ``NAME=value`` words before a command are its environment;
- ``python``: runs as a script, and must exit 0;
- ``js``: runs in Node with the real pusher-js, in the background until the story ends;
  the story goes on once ``pusher`` is connected and every channel it subscribed to has
  its answer (subscribed, or refused by the auth endpoint), its sign-in too if it asked;
- ``text`` marked ``<!-- snippet: output -->``: each of its lines must show up, within a
  bounded wait, in what the story's servers and Node clients printed so far.

In a story, every port a server listens on (``--port N``, ``--bind HOST:N``; 6001 for
``tidings serve`` without one) becomes a free port in every block, and ``redis://HOST:6379``
the test's redis-server. The story's servers see the test's redis with the default key
prefix, as an app publishing through ``Realtime.client("redis://...")`` does. A story must
check something (an output block or a python block): servers that merely start prove
little. Blocks marked no-run are skipped, as everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pusher_helpers import TIMEOUT

from redis_server import RedisServer
from server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "tests" / "e2e"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECKED = ("python", "js", "toml", "json")
SHELL = ("sh", "bash", "shell", "console")
SHOWN = ("text", "nginx")
NO_RUN = re.compile(r"<!--\s*snippet:\s*no-run\b\s*(?:\((?P<reason>.*)\))?\s*-->")
FILE = re.compile(r"<!--\s*snippet:\s*file\s+(?P<name>[\w.-]+)\s*-->")
OUTPUT = re.compile(r"<!--\s*snippet:\s*output\s*-->")
MARKER = re.compile(r"<!--\s*snippet:")
FENCE = re.compile(r"^```(\S*)\s*$")
SECTION = re.compile(r"^## ")
# The programs a shell block may run here; a marked block made only of these is not honest.
RUNNABLE = ("tidings",)
# ... and in a story, which has the app files and servers these need.
STORY_RUNNABLE = (*RUNNABLE, "uvicorn", "gunicorn", "curl", "django-admin")
# Programs a story keeps running in the background, and the port each listens on by default.
SERVERS = {"uvicorn": 8000, "gunicorn": 8000, "tidings": 6001}
DOCS_APPS = (("1", "my-key", "my-secret"), ("12345", "app-key", "app-secret"))


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    reason: str | None  # why it is marked no-run; None when it runs
    section: str = ""  # the ``## `` heading it is under
    file: str | None = None  # the name it is written to, in a story
    output: bool = False  # what a story's processes must have printed

    @property
    def runs(self) -> bool:
        return self.reason is None

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        section = ""
        i = 0
        while i < len(lines):
            if SECTION.match(lines[i]):
                section = lines[i][3:].strip()
            fence = FENCE.match(lines[i])
            if fence is None:
                i += 1
                continue
            end = i + 1
            while end < len(lines) and lines[end] != "```":
                end += 1
            before = lines[i - 1] if i > 0 else ""
            marker = NO_RUN.search(before)
            reason = None if marker is None else (marker["reason"] or "").strip()
            file = FILE.search(before)
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(
                Snippet(
                    path,
                    i + 1,
                    fence[1],
                    code,
                    reason,
                    section,
                    file["name"] if file else None,
                    OUTPUT.search(before) is not None,
                )
            )
            i = end + 1
    return found


SNIPPETS = snippets()


def stories() -> dict[str, list[Snippet]]:
    """The doc sections that hold a ``file`` block, each with its blocks in order."""
    sections: dict[str, list[Snippet]] = {}
    for snippet in SNIPPETS:
        sections.setdefault(f"{snippet.path.name}: {snippet.section}", []).append(snippet)
    return {name: blocks for name, blocks in sections.items() if any(b.file for b in blocks)}


STORIES = stories()
IN_STORIES = {id(s) for blocks in STORIES.values() for s in blocks}


def by_language(*languages: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.language in languages]


def in_story(snippet: Snippet) -> bool:
    return id(snippet) in IN_STORIES


def docs_config(directory: Path) -> Path:
    """A tidings.toml with every app the docs use (their ids, keys and secrets)."""
    config = directory / "tidings.toml"
    config.write_text(
        "".join(
            f'[[apps]]\nid = "{i}"\nkey = "{k}"\nsecret = "{s}"\nclient_events = true\n\n'
            for i, k, s in DOCS_APPS
        )
    )
    return config


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with every app the docs use."""
    d = tmp_path_factory.mktemp("docs")
    srv = ServerProcess(free_port(), docs_config(d), d / "server.log")
    srv.start()
    yield srv
    srv.stop()


def test_the_docs_have_snippets_of_each_kind() -> None:
    # Guards the extraction itself: a broken parser would make every test below vacuous.
    assert set(CHECKED) | {"sh"} <= {s.language for s in SNIPPETS}, SNIPPETS
    assert any(s.runs for s in by_language("python"))
    assert any(s.runs for s in by_language(*SHELL))
    assert any(not s.runs for s in by_language(*SHELL))


def test_every_story_checks_what_its_servers_do() -> None:
    # A story that starts servers and checks nothing would pass whatever the apps do.
    unchecked = [
        name
        for name, blocks in STORIES.items()
        if not any(b.runs and (b.output or (b.language == "python" and not b.file)) for b in blocks)
    ]
    assert STORIES and not unchecked, f"stories with no output block or python check: {unchecked}"


def test_every_fence_says_what_it_holds() -> None:
    known = {*CHECKED, *SHELL, *SHOWN}
    untyped = [
        f"{s}: tag it (sh for commands, text for output)" for s in SNIPPETS if not s.language
    ]
    unknown = [
        f"{s}: ```{s.language} is not checked here"
        for s in SNIPPETS
        if s.language and s.language not in known
    ]
    assert not untyped + unknown, "\n".join(untyped + unknown)


def test_every_no_run_marker_gives_its_reason_before_a_fence() -> None:
    # "needs Flask" says what to change for the block to run; "manual" or "" does not.
    problems = [
        f"{s}: no-run needs a (reason) saying what stops it"
        for s in SNIPPETS
        if s.reason is not None and len(s.reason.split()) < 2
    ]
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines[:-1]):
            if MARKER.search(line) and FENCE.match(lines[i + 1]) is None:
                problems.append(
                    f"{path.relative_to(ROOT)}:{i + 1}: marker not right before a fence"
                )
    problems += [
        f"{s}: an output block is a text block"
        for s in SNIPPETS
        if s.output and s.language != "text"
    ]
    problems += [
        f"{s}: an output block only checks a story"
        for s in SNIPPETS
        if s.output and not in_story(s)
    ]
    assert not problems, "\n".join(problems)


def test_marked_shell_blocks_hold_something_that_cannot_run_here() -> None:
    runnable_only = [
        f"{s}: marked no-run ({s.reason}) but every command runs here: drop the marker"
        for s in by_language(*SHELL)
        if not s.runs
        and all(
            split_assignments(c)[1][0] in (STORY_RUNNABLE if in_story(s) else RUNNABLE)
            for c in commands(s.code)
        )
    ]
    assert not runnable_only, "\n".join(runnable_only)


@pytest.mark.parametrize("snippet", by_language("python"), ids=str)
def test_python_snippet(snippet: Snippet, docs_server: ServerProcess, tmp_path: Path) -> None:
    compile(snippet.code, str(snippet), "exec")
    if not snippet.runs or in_story(snippet):
        return  # a story's blocks run in test_story
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code.replace("6001", str(docs_server.port)))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


# Runs a pusher-js block in Node: `Pusher` is the real client; the block's own code is left
# as written; the harness waits for the connection and exits.
JS_HARNESS = """\
const Pusher = require('pusher-js');
const window = globalThis;
%s
;(function wait(started) {
  const p = typeof pusher !== 'undefined' ? pusher : null;
  if (p && p.connection.state === 'connected') { p.disconnect(); process.exit(0); }
  if (Date.now() - started > %d) {
    console.error('not connected: ' + (p ? p.connection.state : 'no pusher'));
    process.exit(1);
  }
  setTimeout(() => wait(started), 50);
})(Date.now());
"""


@pytest.mark.node
@pytest.mark.parametrize("snippet", by_language("js"), ids=str)
def test_js_snippet(snippet: Snippet, docs_server: ServerProcess, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is required (make install)"
    source = tmp_path / "snippet.js"
    source.write_text(snippet.code)
    check = subprocess.run([node, "--check", str(source)], capture_output=True, text=True)
    assert check.returncode == 0, f"{snippet}\n{check.stderr}"
    if not snippet.runs or in_story(snippet):
        return  # a story's blocks run in test_story
    assert "new Pusher(" in snippet.code, f"{snippet}: mark it no-run or make it pusher-js"
    code = snippet.code.replace("6001", str(docs_server.port))
    runner = E2E / f"snippet-{free_port()}.js"  # next to node_modules, for require()
    runner.write_text(JS_HARNESS % (code, int(4 * TIMEOUT * 1000)))
    try:
        done = subprocess.run(
            [node, str(runner)], capture_output=True, text=True, timeout=6 * TIMEOUT, cwd=E2E
        )
    finally:
        runner.unlink()
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("snippet", by_language("toml"), ids=str)
def test_toml_snippet(snippet: Snippet, tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(snippet.code)
    if not snippet.runs:
        import tomllib

        tomllib.loads(snippet.code)
        return
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
    )
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("snippet", by_language("json"), ids=str)
def test_json_snippet(snippet: Snippet) -> None:
    if snippet.runs:
        json.loads(snippet.code)


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: one per line (a trailing backslash joins lines),
    comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def substituted(argv: list[str], port: int, redis_port: int) -> list[str]:
    """The command as written, pointed at this test's ports (see the module docstring)."""
    out = []
    for arg in argv:
        arg = arg.replace("6001", str(port)).replace("0.0.0.0", "127.0.0.1")
        out.append(re.sub(r"redis://[^/\s:]+:6379", f"redis://127.0.0.1:{redis_port}", arg))
    return out


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def serve(argv: list[str], env: dict[str, str], cwd: Path, port: int, label: str) -> None:
    """Start a `tidings serve` command, wait until every worker listens and /ready answers,
    then stop it as a terminal's Ctrl-C or `kill -- -PGID` would; it must exit 0."""
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 1
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 6 * TIMEOUT
        while log.read_text(errors="replace").count("listening on ") < workers or not ready(port):
            assert proc.poll() is None, f"{label}: exited {proc.returncode}\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{label}: never listened\n{log.read_text()}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=4 * TIMEOUT)
        assert code == 0, f"{label}: SIGTERM gave exit {code}\n{log.read_text()}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: a worker may outlive its parent
        proc.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("snippet", by_language(*SHELL), ids=str)
def test_shell_snippet(
    snippet: Snippet,
    docs_server: ServerProcess,
    redis_server: RedisServer,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    argvs = commands(snippet.code)
    assert argvs, f"{snippet}: no command in a shell block: tag it text"
    if not snippet.runs or in_story(snippet):
        return  # a story's blocks run in test_story
    docs_config(tmp_path)
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        TIDINGS_REDIS_PREFIX=redis_prefix,
        TIDINGS_SHUTDOWN_READY_DELAY="0",
    )
    for written in argvs:
        label = f"{snippet}: {shlex.join(written)}"
        assert written[0] in RUNNABLE, f"{label}\n{written[0]} cannot run here: mark the block"
        if written[1:2] == ["serve"]:
            port = free_port()
            argv = substituted(written, port, redis_server.port)
            serve(argv, {**env, "TIDINGS_PORT": str(port)}, tmp_path, port, label)
            continue
        argv = substituted(written, docs_server.port, redis_server.port)
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=6 * TIMEOUT
        )
        assert done.returncode == 0, f"{label}\n{done.stdout}{done.stderr}"


# -- stories (see the module docstring) ------------------------------------------------------

# Runs a story's pusher-js block in Node until the story ends. Before the block: every
# channel it subscribes to, and its sign-in, record a refusal. After it: "snippet: ready" on
# stderr once the connection is up and every channel (the user's own, after a sign-in) has
# its answer.
STORY_JS = """\
const Pusher = require('pusher-js');
const window = globalThis;
const subscribe = Pusher.prototype.subscribe;
Pusher.prototype.subscribe = function (name) {
  const channel = subscribe.call(this, name);
  if (!channel.snippetWatched) {
    channel.snippetWatched = true;
    channel.bind('pusher:subscription_error', () => { channel.snippetRefused = true; });
  }
  return channel;
};
const signin = Pusher.prototype.signin;
Pusher.prototype.signin = function () {
  this.user.bind('pusher:signin_error', () => { this.snippetSigninRefused = true; });
  return signin.call(this);
};
%s
;(function wait(started) {
  const p = typeof pusher !== 'undefined' ? pusher : null;
  const answered = (c) => c.subscribed || c.snippetRefused;
  const own = (u) => u.serverToUserChannel !== null && u.serverToUserChannel.subscribed;
  const signedIn = (q) => !q.user.signin_requested || q.snippetSigninRefused || own(q.user);
  if (p && p.connection.state === 'connected' && p.allChannels().every(answered) && signedIn(p)) {
    process.stderr.write('snippet: ready\\n');
    return;
  }
  if (Date.now() - started > %d) {
    console.error('not ready: ' + (p ? p.connection.state : 'no pusher'));
    process.exit(1);
  }
  setTimeout(() => wait(started), 20);
})(Date.now());
"""


def split_assignments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``NAME=value`` words before a command (its environment), and the command."""
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        name, _, value = argv[0].partition("=")
        env[name] = value
        argv = argv[1:]
    return env, argv


def listening_port(argv: list[str]) -> int | None:
    """The port a server command listens on, as written; None when it is not a server."""
    if argv[0] not in SERVERS or (argv[0] == "tidings" and argv[1:2] != ["serve"]):
        return None
    for at, arg in enumerate(argv):
        value = argv[at + 1] if at + 1 < len(argv) else ""
        if arg.startswith(("--port=", "--bind=")):
            value, arg = arg.partition("=")[2], arg.partition("=")[0]
        if arg == "--port":
            return int(value)
        if arg in ("--bind", "-b"):
            return int(value.rpartition(":")[2])
    return SERVERS[argv[0]]


class Story:
    """One story's directory, port map and background processes (see the module docstring)."""

    def __init__(self, blocks: list[Snippet], directory: Path, redis_port: int) -> None:
        self.blocks = blocks
        self.directory = directory
        self.redis_port = redis_port
        self.ports: dict[int, int] = {}
        for block in blocks:
            if block.language in SHELL:
                for argv in commands(block.code):
                    written = listening_port(split_assignments(argv)[1])
                    if written is not None:
                        self.ports.setdefault(written, free_port())
        # (label, process, its output, whether it is a server that must exit 0 on SIGTERM)
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path, bool]] = []
        self.runners: list[Path] = []  # Node scripts written next to node_modules
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            TIDINGS_SHUTDOWN_READY_DELAY="0",
        )
        self.env = env
        docs_config(directory)

    def text(self, code: str) -> str:
        """``code`` pointed at this story's ports and redis-server."""
        for written, port in self.ports.items():
            code = re.sub(rf"\b{written}\b", str(port), code)
        code = code.replace("0.0.0.0", "127.0.0.1")
        return re.sub(r"redis://[^/\s:]+:6379", f"redis://127.0.0.1:{self.redis_port}", code)

    def printed(self) -> str:
        return "".join(log.read_text(errors="replace") for _, _, log, _ in self.processes)

    def describe(self) -> str:
        return "\n".join(
            f"--- {label} ---\n{log.read_text(errors='replace')}"
            for label, _, log, _ in self.processes
        )

    def background(
        self, label: str, argv: list[str], env: dict[str, str], server: bool
    ) -> subprocess.Popen[bytes]:
        log = self.directory / f"process-{len(self.processes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
                start_new_session=True,
            )
        self.processes.append((label, proc, log, server))
        return proc

    def wait(self, what: str, done: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 6 * TIMEOUT
        while not done():
            assert proc.poll() is None, f"{what}: exited {proc.returncode}\n{self.describe()}"
            assert time.monotonic() < deadline, f"{what}: timed out\n{self.describe()}"
            time.sleep(0.05)

    # -- the blocks --------------------------------------------------------------------------

    def run(self, block: Snippet) -> None:
        if not block.runs:
            return
        if block.file is not None:
            if block.language == "python":
                compile(block.code, str(block), "exec")
            (self.directory / block.file).write_text(self.text(block.code))
        elif block.language in SHELL:
            for argv in commands(block.code):
                self.command(block, argv)
        elif block.language == "python":
            self.script(block)
        elif block.language == "js":
            self.pusher_js(block)
        elif block.output:
            self.expect_output(block)

    def command(self, block: Snippet, line: list[str]) -> None:
        label = f"{block}: {shlex.join(line)}"
        written = split_assignments(line)[1]
        assert written[0] in STORY_RUNNABLE, f"{label}\n{written[0]} cannot run here: mark it"
        port = listening_port(written)
        assignments, argv = split_assignments(shlex.split(self.text(shlex.join(line))))
        env = {**self.env, **assignments}
        if port is None:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.directory,
                timeout=6 * TIMEOUT,
            )
            assert done.returncode == 0, f"{label}\n{done.stdout}{done.stderr}\n{self.describe()}"
            return
        local = self.ports[port]
        if argv[0] == "tidings":
            env["TIDINGS_PORT"] = str(local)  # `tidings serve` without --port
        proc = self.background(label, argv, env, server=True)
        if argv[0] == "tidings":
            self.wait(label, lambda: ready(local), proc)
        else:
            self.wait(label, lambda: accepts(local), proc)

    def script(self, block: Snippet) -> None:
        script = self.directory / f"check-{block.line}.py"
        script.write_text(self.text(block.code))
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.directory,
            timeout=6 * TIMEOUT,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout}{done.stderr}\n{self.describe()}"

    def pusher_js(self, block: Snippet) -> None:
        node = shutil.which("node")
        assert node is not None, "Node.js is required (make install)"
        # Next to node_modules, for require(); removed when the story ends.
        runner = E2E / f"story-{free_port()}-{block.line}.js"
        runner.write_text(STORY_JS % (self.text(block.code), int(4 * TIMEOUT * 1000)))
        self.runners.append(runner)
        proc = self.background(str(block), [node, str(runner)], self.env, server=False)
        log = self.processes[-1][2]
        self.wait(f"{block}: pusher-js", lambda: "snippet: ready" in log.read_text(), proc)

    def expect_output(self, block: Snippet) -> None:
        lines = [line.strip() for line in self.text(block.code).splitlines() if line.strip()]
        deadline = time.monotonic() + 4 * TIMEOUT
        while missing := [line for line in lines if line not in self.printed()]:
            assert time.monotonic() < deadline, (
                f"{block}: never printed {missing}\n{self.describe()}"
            )
            time.sleep(0.05)

    def stop(self) -> list[str]:
        """SIGTERM every background process, newest first; the servers' exit codes that are
        not 0."""
        failures = []
        for label, proc, log, server in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(timeout=4 * TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: a worker may outlive its parent
            proc.wait(timeout=TIMEOUT)
            if server and not stopped_cleanly(code, log.read_text(errors="replace")):
                failures.append(f"{label}: SIGTERM gave exit {code}\n{log.read_text()}")
        for runner in self.runners:
            runner.unlink(missing_ok=True)
        return failures


def stopped_cleanly(code: int | None, printed: str) -> bool:
    """Exit 0; or uvicorn's way: after its graceful shutdown, it raises the signal it got
    again (exit -SIGTERM), as a shell expects of a program stopped by a signal."""
    uvicorn_done = "Finished server process" in printed
    return code == 0 or (code == -signal.SIGTERM and uvicorn_done)


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.mark.node
@pytest.mark.parametrize("name", list(STORIES), ids=str)
def test_story(name: str, redis_server: RedisServer, tmp_path: Path) -> None:
    story = Story(STORIES[name], tmp_path, redis_server.port)
    try:
        for block in story.blocks:
            story.run(block)
    finally:
        failures = story.stop()
    assert not failures, "\n".join(failures)
