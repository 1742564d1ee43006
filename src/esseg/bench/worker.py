"""Run each benchmark configuration in a fresh process, so one configuration's peak memory is
not hidden by (or blamed on) another's.

Two modes, one contract (``run(task, params) -> result dict`` with a ``status``):

- ``fork`` (default on Linux): a server process is started once per benchmark run with
  ``python -m esseg.bench.worker --serve``; it imports torch (and the model library) and then,
  for every configuration, forks a child that runs the task and exits. Each child starts from
  the state right after the imports: no tensor, no thread pool, no allocator cache from an
  earlier configuration, without paying the import time (seconds) per configuration. The
  server never runs a torch op, so the children start CUDA and the thread pools themselves.
- ``spawn``: a new interpreter per configuration (``python -m esseg.bench.worker --task ...``).
  Slower; use it to cross-check, or where ``os.fork`` is missing.

A child that is killed (e.g. by the kernel's out-of-memory killer) or runs past its timeout
yields a ``killed`` / ``timeout`` result instead of stopping the benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from esseg.errors import EssegError

# Tasks a worker may run: name -> "module:function"; the function maps params (a JSON dict)
# to a result dict with at least "status" ("ok", "oom", "error").
TASKS = {
    "train_step": "esseg.bench.memory:train_step_task",
    "loss": "esseg.bench.loss:loss_task",
    "scale": "esseg.bench.scale:scale_task",
    "scale_knn": "esseg.bench.scale:knn_task",
}
MODES = ("fork", "spawn")


def run_task(task: str, params: dict) -> dict:
    """Run one task in this process; exceptions become ``{"status": "oom" | "error", "note"}``."""
    from esseg.bench.common import is_out_of_memory

    if task not in TASKS:
        raise ValueError(f"unknown benchmark task {task!r}; known tasks: {', '.join(TASKS)}")
    module, func = TASKS[task].split(":")
    try:
        return getattr(importlib.import_module(module), func)(params)
    except Exception as err:  # noqa: BLE001 - reported as the configuration's status
        text = str(err).strip().splitlines()
        return {"status": "oom" if is_out_of_memory(err) else "error",
                "note": f"{type(err).__name__}: {text[0] if text else ''}"[:300]}


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_result(path: Path, exitcode: int | None, timed_out: bool, timeout: float | None) -> dict:
    if timed_out:
        return {"status": "timeout", "note": f"timeout: stopped after {timeout:g} s (raise --timeout)"}
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        why = " (probably the out-of-memory killer)" if sig == signal.SIGKILL else ""
        return {"status": "killed", "note": f"killed by signal {sig}{why}"}
    return {"status": "error", "note": f"worker exited with status {exitcode} without a result"}


def _child_env() -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the esseg package
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # An import that asks torch.cuda.is_available() must not start CUDA in the fork server.
    env.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    return env


class IsolatedRunner:
    """Runs benchmark tasks, each in a new process that has run nothing else (see module doc).

    Use as a context manager; ``run(task, params, timeout)`` returns the task's result dict.

    Args:
        mode: ``"fork"`` (a pre-imported server forks one child per task) or ``"spawn"``.
        preload: modules the fork server imports before it forks.
        timeout: default seconds per task (None: no limit).
    """

    def __init__(self, mode: str = "fork", preload: tuple[str, ...] = ("torch", "esseg"), timeout: float | None = None):
        if mode not in MODES:
            raise ValueError(f"isolation mode must be one of {', '.join(MODES)}; got {mode!r}")
        if mode == "fork" and not hasattr(os, "fork"):
            mode = "spawn"
        self.mode, self.preload, self.timeout = mode, tuple(preload), timeout
        self._server: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="esseg-bench-")
        self._count = 0

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the fork server (if running) and remove the temporary files."""
        if self._server is not None:
            server, self._server = self._server, None
            try:
                server.stdin.close()  # end of requests: an idle server exits at once
                server.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                server.terminate()  # busy (we were interrupted): it kills its running child and exits
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            server.stdout.close()
        self._tmp.cleanup()

    def _start_server(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "esseg.bench.worker", "--serve", "--preload", ",".join(self.preload)]
        server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_child_env())
        line = server.stdout.readline()
        if json.loads(line or "{}").get("ready") is not True:
            server.kill()
            server.wait()
            raise EssegError("the benchmark fork server did not start (see the messages above); "
                             "try --isolation spawn")
        return server

    def run(self, task: str, params: dict, timeout: float | None = None) -> dict:
        """Run ``task`` with ``params`` in a fresh process; returns its result dict."""
        timeout = timeout if timeout is not None else self.timeout
        self._count += 1
        result = Path(self._tmp.name) / f"result-{self._count}.json"
        if self.mode == "spawn":
            params_path = Path(self._tmp.name) / f"params-{self._count}.json"
            params_path.write_text(json.dumps(params), encoding="utf-8")
            cmd = [sys.executable, "-m", "esseg.bench.worker", "--task", task, "--params", str(params_path),
                   "--result", str(result)]
            try:
                proc = subprocess.run(cmd, env=_child_env(), timeout=timeout, check=False)
                return _read_result(result, proc.returncode, False, timeout)
            except subprocess.TimeoutExpired:
                return _read_result(result, None, True, timeout)
        if self._server is None or self._server.poll() is not None:
            self._server = self._start_server()
        request = dict(task=task, params=params, result=str(result), timeout=timeout)
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        line = self._server.stdout.readline()
        if not line:
            self._server = None
            return {"status": "error", "note": "the benchmark fork server exited unexpectedly"}
        reply = json.loads(line)
        return _read_result(result, reply["exitcode"], reply["timed_out"], timeout)


# ------------------------------------------------------------------ the worker process


def _wait(pid: int, timeout: float | None) -> tuple[int, bool]:
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if timeout is not None and time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.01)


def _child(request: dict) -> None:
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.dup2(2, 1)  # the task's prints go to stderr, never into the reply channel
        _write_json(request["result"], run_task(request["task"], request["params"]))
        code = 0
    except BaseException:  # noqa: BLE001 - report and exit; never return into the server loop
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve(preload: list[str]) -> None:
    """Fork server loop: one JSON request per stdin line, one JSON reply per stdout line."""
    for name in preload:
        importlib.import_module(name)
    for spec in TASKS.values():
        importlib.import_module(spec.split(":")[0])
    active: list[int] = []

    def stop(signum, frame):  # terminated mid-task: take the running child along
        for pid in active:
            os.kill(pid, signal.SIGKILL)
        os._exit(1)

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised while importing the preloaded modules; use --isolation spawn")
    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        active.append(pid)
        exitcode, timed_out = _wait(pid, request.get("timeout"))
        active.remove(pid)
        print(json.dumps({"exitcode": exitcode, "timed_out": timed_out}), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``--serve`` (fork server) or ``--task NAME --params FILE --result FILE`` (one task)."""
    p = argparse.ArgumentParser(prog="python -m esseg.bench.worker", description=__doc__.split("\n")[0])
    p.add_argument("--serve", action="store_true")
    p.add_argument("--preload", default="torch,esseg")
    p.add_argument("--task", choices=sorted(TASKS))
    p.add_argument("--params")
    p.add_argument("--result")
    args = p.parse_args(argv)
    if args.serve:
        serve([m for m in args.preload.split(",") if m])
        return 0
    if not (args.task and args.params and args.result):
        p.error("give --serve, or --task, --params and --result")
    with open(args.params, encoding="utf-8") as f:
        params = json.load(f)
    _write_json(args.result, run_task(args.task, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
