"""A real ROS master for integration tests: one roscore per test session on a free port.

ROS allows one rospy.init_node per process, so the fixture initialises a test node once; tests
use `launch(...)` to start this package's nodes as real processes against that master.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xmlrpc.client

import pytest

rospy = pytest.importorskip("rospy", reason="ROS 1 (rospy) is required for the integration tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_master(uri: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            xmlrpc.client.ServerProxy(uri).getSystemState("/conftest")
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("roscore did not answer at %s within %.0f s" % (uri, timeout))


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def roscore():
    """Starts roscore on a free port, points this process at it and inits the test node once."""
    port = _free_port()
    ros_home = tempfile.mkdtemp(prefix="dream_ros_test_home_")
    uri = "http://localhost:%d" % port
    os.environ.update(ROS_MASTER_URI=uri, ROS_HOME=ros_home, ROS_LOG_DIR=os.path.join(ros_home, "log"),
                      ROS_HOSTNAME="localhost")
    proc = subprocess.Popen(["roscore", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_master(uri)
        rospy.init_node("dream_ros_pytest", anonymous=True, disable_signals=True)
        yield uri
    finally:
        _stop(proc)
        shutil.rmtree(ros_home, ignore_errors=True)


class Launched:
    """A roslaunch/rosrun process started against the test master, stopped on teardown."""

    def __init__(self):
        self.procs = []

    def __call__(self, *args, log_name: str = "launch"):
        log = open(os.path.join(os.environ["ROS_HOME"], "%s_%d.log" % (log_name, len(self.procs))), "w")
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log.name
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for p in reversed(self.procs):
            _stop(p)
        self.procs = []


@pytest.fixture
def launch(roscore):
    """launch("roslaunch", "dream_ros", "x.launch", "arg:=v") or launch("rosrun", "dream_ros", node)."""
    launched = Launched()
    yield launched
    launched.stop_all()
