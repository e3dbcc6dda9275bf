"""``adalrs-ray compare`` and ``adalrs-ray train`` submitted as Ray jobs to a real head node.

The head is a ``ray start --head`` of its own: free localhost ports, its own ``--temp-dir``,
so it never meets the session cluster of ``conftest.py`` or another Ray on this machine. It is
stopped by killing exactly the processes whose command line names that temp dir, and their
children (``ray stop`` has no address option in Ray 2.60 and stops every Ray of the user). Ray 2.60 turns token
authentication on for a head started where ``~/.ray/auth_token`` exists; the head and the
clients here all run with ``RAY_AUTH_MODE=token`` when that file exists (docs/cluster.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

RAY = str(Path(sys.executable).with_name("ray"))
ADALRS = str(Path(sys.executable).with_name("adalrs-ray"))


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AIR_NEW_OUTPUT="0", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    if (Path.home() / ".ray" / "auth_token").is_file():
        env["RAY_AUTH_MODE"] = "token"  # else `ray job submit`: "Missing authentication token"
    return env


def _pids_of(temp_dir: str) -> list[int]:
    """Processes whose command line names ``temp_dir`` (this head's gcs, raylet, agents and
    workers: every Ray process gets the session dir in its arguments), and their descendants
    (a job's driver is a child of its JobSupervisor worker and names no temp dir)."""
    parent, cmds = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        cmds[pid] = cmd.decode(errors="replace")
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    mine = {pid for pid, cmd in cmds.items() if temp_dir in cmd and pid != os.getpid()}
    grew = True
    while grew:
        kids = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        mine |= kids
        grew = bool(kids)
    return sorted(mine)


def _stop(temp_dir: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_of(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _pids_of(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _pids_of(temp_dir):
            return


def _head_ports() -> tuple[list[int], int]:
    """Nine free ports for the head's components and the low end of a 201-port worker range
    that holds none of them: Ray refuses a start whose worker range contains another
    component's port ("... is trying to use a port number ... that is used by other
    components", ray/_private/parameter.py), and a range drawn at random did, once in CI."""
    ports = _free_ports(9)
    while True:
        low = _free_ports(1)[0]
        if low + 200 <= 65535 and not any(low <= p <= low + 200 for p in ports):
            return ports, low


def _start_head(temp_dir: str, env: dict[str, str]) -> int:
    """``ray start --head`` on fresh free ports; a port taken between the draw and the start
    makes it fail, so it is tried up to three times. Returns the dashboard port."""
    errors = []
    for _ in range(3):
        (gcs, dash, client, node, obj, agent, agent_grpc, rt_env, metrics), low = _head_ports()
        cmd = [RAY, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1"]
        cmd += ["--port", str(gcs), "--dashboard-host", "127.0.0.1"]
        cmd += ["--dashboard-port", str(dash), "--ray-client-server-port", str(client)]
        cmd += ["--node-manager-port", str(node), "--object-manager-port", str(obj)]
        cmd += ["--dashboard-agent-listen-port", str(agent)]
        cmd += ["--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port"]
        cmd += [str(rt_env), "--metrics-export-port", str(metrics), "--temp-dir", temp_dir]
        cmd += ["--min-worker-port", str(low), "--max-worker-port", str(low + 200)]
        cmd += ["--disable-usage-stats", "--include-dashboard", "true"]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if run.returncode == 0:
            return dash
        errors.append(f"exit {run.returncode}: {(run.stdout + run.stderr)[-2000:]}")
        _stop(temp_dir)
    raise RuntimeError("ray start --head failed three times:\n" + "\n---\n".join(errors))


def test_the_worker_port_range_holds_no_component_port():
    for _ in range(50):
        ports, low = _head_ports()
        assert len(set(ports)) == 9 and low + 200 <= 65535
        assert not [p for p in ports if low <= p <= low + 200]


@pytest.fixture
def head():
    """A 2-CPU head node on free localhost ports; yields (dashboard URL, env, temp dir)."""
    # short: Ray's Unix socket paths under the temp dir must stay below 108 bytes
    temp_dir = tempfile.mkdtemp(prefix="adalrs_cj_", dir="/tmp")
    env = _env()
    try:
        dash = _start_head(temp_dir, env)
        yield f"http://127.0.0.1:{dash}", env, temp_dir
    finally:
        _stop(temp_dir)
        left = _pids_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes of the test head left behind: {left}"


def _run_job(address: str, env: dict[str, str], cwd: Path, argv: list[str], timeout: float):
    """``ray job submit`` of ``argv``, waiting for the end: it exits 0 only if the job
    SUCCEEDED (ray/dashboard/modules/job/cli.py) and streams the job's logs to its stdout."""
    job_id = f"adalrs_{Path(argv[1]).name}_{os.getpid()}_{time.monotonic_ns()}"
    cmd = [RAY, "job", "submit", "--address", address, "--submission-id", job_id]
    cmd += ["--", *argv]
    try:
        return subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        subprocess.run(
            [RAY, "job", "stop", "--address", address, "--no-wait", job_id],
            env=env,
            capture_output=True,
            timeout=60,
        )
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"job {job_id} still running after {timeout} s: {(out or '')[-3000:]}")


@pytest.mark.ray
@pytest.mark.slow
def test_compare_and_train_as_jobs_on_a_head_node(head, tmp_path):
    address, env, temp_dir = head
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(120):
        (corpus / f"f{i:03d}.txt").write_text(
            "".join(f"item {i} {j} = {j * i}\n" for j in range(30))
        )
    compare_out, train_out = tmp_path / "sim", tmp_path / "train"
    compare = [ADALRS, "compare", "--task", "sim", "--steps", "2000", "--report-every", "1000"]
    compare += ["--window", "50", "--grid-points", "2", "--hyperband-trials", "2"]
    compare += ["--pbt-trials", "2", "--adalrs-starts", "0.1", "--max-concurrent", "2"]
    compare += ["--address", "auto", "--no-loggers", "--quiet", "--out", str(compare_out)]
    train = [ADALRS, "train", "--workers", "2", "--address", "auto", "--data", str(corpus)]
    train += ["--cache-dir", str(tmp_path / "cache"), "--seq-len", "32", "--batch-size", "4"]
    train += ["--eval-batches", "1", "--steps", "12", "--device", "cpu", "--threads", "1"]
    train += ["--cpus-per-worker", "0.5", "--quiet", "--out", str(train_out)]
    # jobs run one after the other: both at once would want more than the head's 2 CPUs
    for argv in (compare, train):
        done = _run_job(address, env, tmp_path, argv, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert "succeeded" in done.stdout + done.stderr
    # the comparison's report, all 7 trials of the 4 arms finished on the head's cluster
    assert (compare_out / "report.md").is_file() and (compare_out / "report.html").is_file()
    trials = pd.read_parquet(compare_out / "trials.parquet")
    assert trials.groupby("arm").size().to_dict() == {
        "adalrs_x0.1": 1,
        "grid": 2,
        "hyperband": 2,
        "pbt": 2,
    }
    settings = json.loads((compare_out / "compare_config.json").read_text())
    assert settings["address"] == "auto"
    # the train job: 2 Ray Train workers, every step in metrics.parquet
    summary = json.loads((train_out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
    # tokens count every worker's batches: 12 steps x 4 sequences x 32 tokens x 2 workers
    assert summary["tokens"] == 12 * 4 * 32 * 2
    assert (train_out / "ray_train").is_dir()  # a Ray Train run, not the in-process loop
    assert len(pd.read_parquet(train_out / "metrics.parquet")) == 12
    # both jobs ran on this head: its session dir holds their driver logs
    assert list(Path(temp_dir).glob("session_*/logs/job-driver-*.log"))
