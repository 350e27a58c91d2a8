#!/usr/bin/env python
"""Load test of the real dream_node (shipped model, continuous mode) against a real roscore.

    source scripts/env.sh && python scripts/load_test.py [--rate 30 --width 1280 --height 720
        --seconds 60 --pause 5] [--max-lag-p95 2.0 --max-rss-growth-mb 64 --max-rss-slope 3]
        [--rss-log rss.csv]

Uses the master at $ROS_MASTER_URI when one answers, else starts ``roscore`` on a free port and
stops it afterwards. Starts dream_node with ``roslaunch dream_ros dream.launch`` (continuous
mode, CPU) and publishes an rgb8 image stream + camera_info + joint_states (same stamps) of the
simulated robot: a few frames rendered once by ``SimCamera`` at 1/``--render-scale`` size,
upscaled and cycled (the point is the node's behaviour under load, not accuracy).

Phases: warm-up (until the first ~pose, then ``--warmup`` s) -> RSS of the node -> ``--seconds``
of stream (measured; the node's RSS sampled every ``--rss-interval`` s) -> RSS again -> a
``--pause`` s pause of all three topics and resume (the
node must process frames again) -> the image publisher unregisters and re-registers (camera
driver restart; must be survived) -> the node is stopped with SIGINT and its log checked.

Lag of a processed frame = wall time its ~pose message arrives - its image stamp (every
processed frame gets a ~pose, accepted or rejected). Dropped = images published in the window
whose stamp never shows up on ~pose (the node drops stale images so it always works on the
newest one). Prints a table; exits 1 when p95 lag exceeds ``--max-lag-p95``, the lag grows
(median of the last third of the window > median of the first third + ``--max-lag-p95``), the
node stops processing, processed stamps go backwards, the node does not recover after the pause
or the publisher restart, RSS grows more than ``--max-rss-growth-mb``, the steady-state RSS slope
exceeds ``--max-rss-slope`` MB/min (windows of >= ``--slope-min-seconds`` only), or the node logs
an error at shutdown.

Memory: RSS jumps by several MB between samples with the frames in flight, so two single
readings say little. The table gives the medians of short bins at the start, at 1/3 and at the
end of the window, and the MB/min of a line fitted through the bins of the last 2/3: warm-up
(allocator arenas, torch caches, buffers filling) shows in the first third, a leak as a slope.
Run long enough for that to mean something, cheaply: ``--rate 10 --seconds 180``.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

import numpy as np

NODE = "dream_load_node"
NS = "/load_camera"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=30.0, help="image rate, Hz")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured stream duration")
    ap.add_argument("--pause", type=float, default=5.0, help="pause without any message, s")
    ap.add_argument("--warmup", type=float, default=5.0, help="stream before measuring, s")
    ap.add_argument("--frames", type=int, default=6, help="distinct pre-rendered frames")
    ap.add_argument("--render-scale", type=int, default=2,
                    help="render at 1/N size, then upscale (cheap but real-looking frames)")
    ap.add_argument("--model", default="", help="~model (empty: the shipped default model)")
    ap.add_argument("--max-lag-p95", type=float, default=2.0, help="bound on p95 lag, s")
    ap.add_argument("--max-rss-growth-mb", type=float, default=64.0,
                    help="bound on the node's RSS growth over the measured window, MB")
    ap.add_argument("--max-rss-slope", type=float, default=3.0,
                    help="bound on the node's steady-state RSS slope (fit over the last 2/3 of "
                         "the window), MB/min; checked for windows of >= --slope-min-seconds")
    ap.add_argument("--slope-min-seconds", type=float, default=120.0,
                    help="shorter windows report the slope but do not check it (too noisy: the "
                         "fit's error is ~1 MB/min over 120 s)")
    ap.add_argument("--rss-interval", type=float, default=1.0, help="RSS sampling period, s")
    ap.add_argument("--rss-log", default="", help="write the RSS samples (s since the window "
                    "start, MB) to this CSV file")
    ap.add_argument("--recover-timeout", type=float, default=20.0,
                    help="seconds the node may take to process a frame after resume/restart")
    ap.add_argument("--startup-timeout", type=float, default=180.0,
                    help="seconds to wait for the node's first ~pose")
    ap.add_argument("--node-arg", action="append", default=[],
                    help="extra roslaunch arg for dream.launch (repeatable), e.g. backend...")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------- master
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_answers(uri: str) -> bool:
    try:
        xmlrpc.client.ServerProxy(uri).getSystemState("/load_test")
        return True
    except Exception:
        return False


def ensure_master():
    """(uri, roscore process or None)."""
    uri = os.environ.get("ROS_MASTER_URI", "")
    if uri and master_answers(uri):
        return uri, None
    port = _free_port()
    uri = "http://localhost:%d" % port
    os.environ["ROS_MASTER_URI"] = uri
    os.environ.setdefault("ROS_HOSTNAME", "localhost")
    proc = subprocess.Popen(["roscore", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        if master_answers(uri):
            return uri, proc
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("roscore did not come up at %s" % uri)


def stop_process(proc, timeout: float = 20.0):
    """SIGINT to the process group (roslaunch/roscore shut their children down), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


def node_pid(name: str):
    """PID of a ROS node, asked from the node itself (roslaunch may sit in between)."""
    master = xmlrpc.client.ServerProxy(os.environ["ROS_MASTER_URI"])
    code, _, uri = master.lookupNode("/load_test", name)
    if code != 1:
        return None
    code, _, pid = xmlrpc.client.ServerProxy(uri).getPid("/load_test")
    return int(pid) if code == 1 else None


def rss_mb(pid: int) -> float:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except (OSError, TypeError):     # the node is gone, or its pid was not found
        pass
    return float("nan")


class RssSampler:
    """RSS of a process every ``interval`` s from a thread: [(wall time, MB)]."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, float(interval)
        self.samples = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), rss_mb(self.pid)))
            self._stop.wait(self.interval)

    def between(self, t0: float, t1: float):
        return [(t, v) for t, v in self.samples if t0 <= t <= t1 and v == v]


def rss_figures(samples, t0: float, t1: float) -> dict:
    """Warm-up vs steady state of RSS samples [(t, MB)] over the window [t0, t1].

    RSS jumps by several MB from one sample to the next with the frames in flight (a 1280x720
    image is 2.7 MB, and the message, its pixels and the network input exist at once), so
    single readings are not compared: the samples are grouped in bins of ``span/20`` (>= 5 s) and
    each bin gives its median. start / third / end: the bin medians at the start, at 1/3 and at
    the end of the window; slope: a least-squares line through the bin medians of the last 2/3,
    MB/min. Memory is flat when that slope is ~0, whatever the first third did (allocator
    arenas, torch/ONNX caches, buffers filling their time windows)."""
    span = max(t1 - t0, 1e-9)
    width = max(5.0, span / 20.0)
    bins = {}
    for t, v in samples:
        if t0 <= t <= t1:
            bins.setdefault(min(int((t - t0) / width), int(span / width)), []).append(v)
    meds = sorted((t0 + (k + 0.5) * width, float(np.median(v))) for k, v in bins.items())
    nan = float("nan")
    if not meds:
        return {"start": nan, "third": nan, "end": nan, "slope_mb_min": nan, "max": nan,
                "jitter": nan}
    third = t0 + span / 3.0
    steady = [(t, v) for t, v in meds if t >= third]
    slope = nan
    if len(steady) >= 3:
        slope = float(np.polyfit((np.array([t for t, _ in steady]) - third) / 60.0,
                                 [v for _, v in steady], 1)[0])
    at_third = min(meds, key=lambda m: abs(m[0] - third))[1]
    vals = [v for t, v in samples if t0 <= t <= t1]
    return {"start": meds[0][1], "third": at_third, "end": meds[-1][1], "slope_mb_min": slope,
            "max": max(vals), "jitter": float(np.percentile(vals, 95) - np.percentile(vals, 5))}


# ------------------------------------------------------------------------------------- frames
def render_frames(width: int, height: int, count: int, scale: int, fov_deg: float = 50.0):
    """[(rgb HxWx3, joints dict)], K: the simulated robot at ``count`` points of its trajectory,
    rendered at 1/scale size and upscaled (the keypoints then sit where K says, to < 1 px)."""
    import cv2
    from dream_ros.ros.sim_camera import SimCamera, intrinsics_from_fov
    scale = max(1, int(scale))
    sim = SimCamera("panda", width=max(16, width // scale), height=max(16, height // scale),
                    fov_deg=fov_deg)
    out = []
    for i in range(count):
        joints = sim.joints(i * 20.0 / max(count, 1))
        rgb = sim.render(joints)
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        out.append((np.ascontiguousarray(rgb), joints))
    return out, intrinsics_from_fov(width, height, fov_deg)


class Stream:
    """Publishes image + camera_info + joint_states at a fixed rate from a thread; can pause and
    re-create its image publisher (driver restart)."""

    def __init__(self, rospy, frames_, K, rate: float):
        from sensor_msgs.msg import CameraInfo, Image, JointState

        from dream_ros.ros.conversions import intrinsics_to_camera_info
        self.rospy, self.rate = rospy, float(rate)
        self.Image, self.JointState = Image, JointState
        h, w = frames_[0][0].shape[:2]
        self.images = [Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
                       for rgb, _ in frames_]
        self.joints = [(list(j), [float(v) for v in j.values()]) for _, j in frames_]
        self.info = intrinsics_to_camera_info(K, (w, h), "load_camera_optical_frame")
        self.pub_info = rospy.Publisher(NS + "/camera_info", CameraInfo, queue_size=1)
        self.pub_js = rospy.Publisher(NS + "/joint_states", JointState, queue_size=10)
        self.pub_img = self._image_publisher()
        self.lock = threading.Lock()
        self.published = []            # stamps (s) of the images published
        self.paused = False
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _image_publisher(self):
        return self.rospy.Publisher(NS + "/image_raw", self.Image, queue_size=1)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop = True
        self.thread.join(5)

    def restart_image_publisher(self, gap_s: float = 1.0):
        """The camera driver goes away and comes back: unregister, wait, re-register."""
        with self.lock:
            self.pub_img.unregister()
            self.pub_img = None
        time.sleep(gap_s)
        pub = self._image_publisher()
        with self.lock:
            self.pub_img = pub

    def _run(self):
        period, n = 1.0 / self.rate, 0
        nxt = time.time()
        while not self._stop and not self.rospy.is_shutdown():
            nxt += period
            if not self.paused:
                with self.lock:
                    pub = self.pub_img
                if pub is not None:
                    i = n % len(self.images)
                    stamp = self.rospy.Time.now()
                    names, pos = self.joints[i]
                    js = self.JointState(name=names, position=pos)
                    js.header.stamp = stamp
                    self.pub_js.publish(js)
                    self.info.header.stamp = stamp
                    self.pub_info.publish(self.info)
                    img = self.images[i]
                    img.header.stamp = stamp
                    img.header.frame_id = self.info.header.frame_id
                    # under the lock: restart_image_publisher must not unregister the handle
                    # between the check and the publish (rospy raises on an unregistered one)
                    with self.lock:
                        if self.pub_img is not None:
                            self.pub_img.publish(img)
                            self.published.append(stamp.to_sec())
                    n += 1
            delay = nxt - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.time()     # behind schedule: publish as fast as we can, no burst


class PoseWatch:
    """Records (arrival wall time, image stamp, status) of every ~pose message, and the node's
    latest diagnostics values."""

    def __init__(self, rospy):
        from diagnostic_msgs.msg import DiagnosticArray
        from dream_ros.msg import PoseEstimate
        self.lock = threading.Lock()
        self.poses = []
        self.diag = {}
        self.sub = rospy.Subscriber("/%s/pose" % NODE, PoseEstimate, self._on_pose,
                                    queue_size=100)
        self.sub_diag = rospy.Subscriber("/diagnostics", DiagnosticArray, self._on_diag,
                                         queue_size=10)

    def _on_pose(self, msg):
        t = time.time()
        with self.lock:
            self.poses.append((t, msg.header.stamp.to_sec(), msg.status, msg.reason))

    def _on_diag(self, msg):
        for st in msg.status:
            if NODE in st.name:
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}

    def since(self, t0: float, t1: float = float("inf")):
        with self.lock:
            return [p for p in self.poses if t0 <= p[1] < t1]

    def wait_for_stamp_after(self, t0: float, timeout: float):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.since(t0)
            if got:
                return got[0]
            time.sleep(0.05)
        return None


# --------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("ROS_HOSTNAME", "localhost")
    uri, core = ensure_master()
    launch = None
    log_path = os.path.join(tempfile.mkdtemp(prefix="dream_load_"), "dream_node.log")
    try:
        import rospy
        rospy.init_node("load_test", anonymous=True, disable_signals=True)
        t_render = time.time()
        frames_, K = render_frames(args.width, args.height, args.frames, args.render_scale)
        print("rendered %d frames %dx%d (1/%d size, upscaled) in %.1f s; master %s%s"
              % (len(frames_), args.width, args.height, args.render_scale,
                 time.time() - t_render, uri, " (started here)" if core else ""), flush=True)
        cmd = ["roslaunch", "dream_ros", "dream.launch", "node_name:=" + NODE, "mode:=continuous",
               "device:=cpu", "image:=%s/image_raw" % NS, "camera_info:=%s/camera_info" % NS,
               "joint_states:=%s/joint_states" % NS, "model:=" + args.model] + list(args.node_arg)
        log = open(log_path, "w")
        launch = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        watch = PoseWatch(rospy)
        stream = Stream(rospy, frames_, K, args.rate).start()

        # Warm-up: the model loads, the first frames are slow.
        t0 = time.time()
        first = watch.wait_for_stamp_after(0.0, args.startup_timeout)
        if first is None:
            print("FAIL: no ~pose from the node within %.0f s (log: %s)"
                  % (args.startup_timeout, log_path))
            return 1
        startup_s = time.time() - t0
        pid = node_pid("/" + NODE)
        rss_first = rss_mb(pid)
        sampler = RssSampler(pid, args.rss_interval).start()
        time.sleep(args.warmup)
        rss0 = rss_mb(pid)
        diag0 = dict(watch.diag)

        # Measured window.
        w0 = rospy.Time.now().to_sec()
        m0 = time.time()
        time.sleep(args.seconds)
        w1 = rospy.Time.now().to_sec()
        m1 = time.time()
        rss1 = rss_mb(pid)
        sampler.stop()
        mem = rss_figures(sampler.between(m0, m1), m0, m1)
        if args.rss_log:
            with open(args.rss_log, "w") as f:
                f.write("t_s,rss_mb\n" + "".join("%.2f,%.2f\n" % (t - m0, v)
                                                  for t, v in sampler.samples))
        time.sleep(min(3.0, args.max_lag_p95 + 0.5))   # let the frames in flight arrive
        diag1 = dict(watch.diag)
        with stream.lock:
            published = [s for s in stream.published if w0 <= s < w1]
        got = watch.since(w0, w1)
        lags = np.array([a - s for a, s, _, _ in got])
        stamps = [s for _, s, _, _ in got]
        increasing = all(b > a for a, b in zip(stamps, stamps[1:]))
        accepted = sum(1 for p in got if p[2] == "ok")
        thirds = np.array_split(lags, 3) if len(lags) >= 3 else [lags, lags, lags]

        # Pause and resume.
        stream.paused = True
        time.sleep(args.pause)
        resume_t = rospy.Time.now().to_sec()
        stream.paused = False
        after_resume = watch.wait_for_stamp_after(resume_t, args.recover_timeout)

        # Publisher restart (driver restart).
        stream.restart_image_publisher()
        restart_t = rospy.Time.now().to_sec()
        after_restart = watch.wait_for_stamp_after(restart_t, args.recover_timeout)
        time.sleep(1.0)
        alive_at_end = launch.poll() is None
        stream.stop()
        rc = stop_process(launch)
        launch = None
        log.close()
        node_log = open(log_path, errors="replace").read()
        shutdown_errors = [ln for ln in node_log.splitlines()
                           if "unregistered" in ln or "Traceback" in ln
                           or "internal error" in ln or "[ERROR]" in ln]

        def d(key):
            try:
                return int(diag1.get(key)) - int(diag0.get(key, 0))
            except (TypeError, ValueError):
                return None

        span = max(w1 - w0, 1e-9)
        med = float(np.median(lags)) if lags.size else float("nan")
        p95 = float(np.percentile(lags, 95)) if lags.size else float("nan")
        rows = [
            ("stream", "%dx%d rgb8, %.1f Hz asked, %.1f Hz published, %.0f s"
             % (args.width, args.height, args.rate, len(published) / span, span)),
            ("node start-up (first ~pose)", "%.1f s" % startup_s),
            ("frames published / processed", "%d / %d (%.2f Hz processed)"
             % (len(published), len(got), len(got) / span)),
            ("frames dropped (not processed)", "%d (%.0f %%); node's images_dropped_stale +%s"
             % (len(published) - len(got),
                100.0 * (len(published) - len(got)) / max(len(published), 1),
                d("images_dropped_stale"))),
            ("accepted (status ok)", "%d%s" % (accepted, "; rejected: " + ", ".join(
                "%s %d" % (k[len("rejected: "):], d(k)) for k in sorted(diag1)
                if k.startswith("rejected: ") and d(k)) if len(got) > accepted else "")),
            ("lag median / p95 / max", "%.3f / %.3f / %.3f s" % (
                med, p95, float(np.max(lags)) if lags.size else float("nan"))),
            ("lag median 1st / last third", "%.3f / %.3f s" % (
                float(np.median(thirds[0])) if len(thirds[0]) else float("nan"),
                float(np.median(thirds[-1])) if len(thirds[-1]) else float("nan"))),
            ("processed stamps increasing", str(increasing)),
            ("node RSS start / end", "%.1f / %.1f MB (%+.1f MB); %.1f MB at the first ~pose"
             % (rss0, rss1, rss1 - rss0, rss_first)),
            ("node RSS start / 1/3 / end", "%.1f / %.1f / %.1f MB (medians of %.0f s bins; "
             "samples jitter %.1f MB p5-p95, max %.1f)" % (mem["start"], mem["third"], mem["end"],
                                                     max(5.0, span / 20.0), mem["jitter"],
                                                     mem["max"])),
            ("RSS warm-up / steady state", "%+.1f MB in the first third; %+.2f MB/min over the "
             "last 2/3 (fit, %.0f s)" % (mem["third"] - mem["start"], mem["slope_mb_min"],
                                        span * 2 / 3)),
            ("after %.0f s pause" % args.pause, "first frame processed %.2f s after resume"
             % (after_resume[0] - resume_t) if after_resume else "NOT RECOVERED"),
            ("after publisher restart", "first frame processed %.2f s after re-register"
             % (after_restart[0] - restart_t) if after_restart else "NOT RECOVERED"),
            ("node shutdown", "exit %s, %d error line(s) in its log" % (rc,
                                                                        len(shutdown_errors))),
        ]
        width = max(len(r[0]) for r in rows)
        print("\ndream_node load test (%s)" % " ".join(cmd[3:]))
        for k, v in rows:
            print("  %-*s  %s" % (width, k, v))

        failures = []
        if len(got) == 0:
            failures.append("the node processed no frame in the window")
        if not (p95 <= args.max_lag_p95):
            failures.append("p95 lag %.3f s > %.3f s" % (p95, args.max_lag_p95))
        if len(thirds[-1]) and len(thirds[0]) and \
                np.median(thirds[-1]) > np.median(thirds[0]) + args.max_lag_p95:
            failures.append("lag grows over the window")
        if got and max(s for _, s, _, _ in got) < w1 - max(5.0, 2 * args.max_lag_p95):
            failures.append("the node stopped processing during the window")
        if not increasing:
            failures.append("processed image stamps are not increasing")
        if not (rss1 - rss0 <= args.max_rss_growth_mb):
            failures.append("RSS grew %.1f MB > %.1f MB" % (rss1 - rss0, args.max_rss_growth_mb))
        if span >= args.slope_min_seconds and not (mem["slope_mb_min"] <= args.max_rss_slope):
            failures.append("RSS still grows %.2f MB/min over the last 2/3 (> %.2f MB/min): a "
                            "leak, not warm-up" % (mem["slope_mb_min"], args.max_rss_slope))
        if after_resume is None:
            failures.append("no frame processed within %.0f s after the pause"
                            % args.recover_timeout)
        if after_restart is None:
            failures.append("no frame processed within %.0f s after the publisher restart"
                            % args.recover_timeout)
        if not alive_at_end:
            failures.append("the node died (log: %s)" % log_path)
        if shutdown_errors:
            failures.append("node log has errors: %s" % " | ".join(shutdown_errors[:3]))
        print("bounds: p95 lag <= %.2f s, RSS growth <= %.0f MB, steady RSS slope <= %.1f MB/min"
              " (%s), recovery <= %.0f s"
              % (args.max_lag_p95, args.max_rss_growth_mb, args.max_rss_slope,
                 "checked" if span >= args.slope_min_seconds else
                 "not checked: window < %.0f s" % args.slope_min_seconds, args.recover_timeout))
        if failures:
            print("FAIL: " + "; ".join(failures) + " (node log: %s)" % log_path)
            return 1
        print("PASS")
        return 0
    finally:
        if launch is not None:
            stop_process(launch)
        if core is not None:
            stop_process(core)


if __name__ == "__main__":
    sys.exit(main())
