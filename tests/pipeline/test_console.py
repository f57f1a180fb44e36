"""The pipeline's console: one line per stage; Ray's, Tune's and Serve's output in the log."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from causalrec.pipeline.runner import LOG_FILE
from causalrec.platform.runtime import output_to_file

from ..listeners import exposed, listeners
from .test_pipeline import TINY

#: What a successful run must not show on the console.
NOISE = ("ERROR", "Traceback", "WARNING", "TensorBoard", "(raylet)", "http_options")


def test_output_in_the_block_goes_to_the_file_and_handlers_come_back(tmp_path, capsys):
    noisy = logging.getLogger("causalrec.tests.noisy")
    noisy.propagate = False
    console = logging.StreamHandler(sys.stderr)
    noisy.addHandler(console)
    made_inside = logging.getLogger("causalrec.tests.late")
    made_inside.propagate = False
    try:
        with open(tmp_path / "run.log", "w") as log, output_to_file(log):
            print("a table")
            noisy.warning("a warning from a library logger")
            late = logging.StreamHandler()  # created in the block: on the log file for now
            made_inside.addHandler(late)
            made_inside.warning("a handler set up in the block")
            print("a raw error line", file=sys.stderr)  # Python warnings are printed so
        assert console.stream is sys.stderr and late.stream is sys.stderr
        noisy.warning("after the block")
    finally:
        noisy.removeHandler(console)
        made_inside.handlers.clear()
    text = (tmp_path / "run.log").read_text()
    for line in ("a table", "a warning from a library logger", "a handler set up in the block"):
        assert line in text
    assert "a raw error line" in text
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "after the block\n"


@pytest.mark.slow
def test_a_successful_run_prints_one_line_per_stage_and_no_noise(tmp_path):
    """The real console, in a process of its own (its own local Ray, started and stopped).

    While it runs, the sockets its process tree listens on (Ray, Tune's trials, Serve's proxy
    and replicas) are listed once a second: every one must be bound to loopback.
    """
    values = json.loads(json.dumps(TINY))
    values["serve"] = {"deploy": True, "port": 0}  # Serve's output is part of what is checked
    values["abtest"] = {"users": 500, "via": "http"}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values))
    out = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    seen, deadline = set(), time.monotonic() + 900
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "causalrec.platform.cli", "pipeline", "--config", str(path),
             "--out", str(out)],
            env=env, stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            while process.poll() is None and time.monotonic() < deadline:
                seen.update(listeners(process.pid))
                time.sleep(1)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    done = SimpleNamespace(
        returncode=process.returncode,
        stdout=(tmp_path / "stdout").read_text(),
        stderr=(tmp_path / "stderr").read_text(),
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names and any("ServeReplica" in n for n in names), seen
    assert exposed(sorted(seen)) == [], exposed(sorted(seen))
    for word in NOISE:
        assert word not in console, console
    stages = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[:3] for line in stages] == [
        [f"[{i}/6]", name, "done"]
        for i, name in enumerate(["simulate", "tune", "deploy", "abtest", "ope", "report"], 1)
    ]
    assert done.stderr == ""
    log = (out / LOG_FILE).read_text()
    assert "Configuration for experiment" in log and "TensorBoard" in log  # Tune's, routed
    assert "Application 'causalrec' is ready" in log  # Serve's, routed
