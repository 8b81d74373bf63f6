"""Run `SCRIPT --help` for each script given, print {script: {"code", "stdout", "stderr"}} as JSON.

Used by test_cli_help.py. Each script runs as __main__ in a child forked from this process, which has
imported the heavy libraries once (torch, transformers, ...), so a script costs its own work, not a
fresh interpreter's ~5 s of imports. A child is isolated as a subprocess is: its own exit code, output
and state.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import sys
import tempfile
import time
import traceback

PRELOAD = ("numpy", "pandas", "torch", "transformers", "peft", "accelerate", "matplotlib.pyplot", "PIL.Image")
TIMEOUT_S = 120


def run_help(script: str, workdir: str) -> dict:
    out_path, err_path = os.path.join(workdir, "out"), os.path.join(workdir, "err")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: a script run as `python SCRIPT --help`
        code = 1
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            sys.argv = [script, "--help"]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + TIMEOUT_S
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(done[1])
    with open(out_path) as out, open(err_path) as err:
        return {"code": code, "stdout": out.read(), "stderr": err.read()}


def main(scripts: list[str]) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    results = {}
    for script in scripts:
        with tempfile.TemporaryDirectory() as workdir:
            results[script] = run_help(script, workdir)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
