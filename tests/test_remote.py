"""Remote profiling over SSH, against a REAL OpenSSH server started by the tests on 127.0.0.1, and the parsers of
the Jetson/TensorRT tools on their recorded real output (tests/fixtures/jetson/).

The server is Debian's ``openssh-server`` (``/usr/sbin/sshd``, installed by scripts/bootstrap.sh), run in the
foreground (``-D``) with a throw-away config, host key and user key in a temporary directory, on a free port, as
the current user. Its "device" runs edgevit's device script with this machine's Python (which has onnxruntime)
on an ONNX export of the shipped fmnist-vit. Tests that need the server skip with the reason when sshd is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "jetson"
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def fixture_text(name: str) -> str:
    """A fixture file without its header (the leading ``#`` lines up to the first blank line)."""
    lines = (FIXTURES / name).read_text().splitlines()
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return "\n".join(lines[i:]).strip("\n") + "\n"


# ------------------------------------------------------------------------------------------------ parsers
def test_tegrastats_orin_nano_jp6_lines_and_energy():
    from edgevit.profiling.jetson import parse_tegrastats, summarise_tegrastats

    samples = parse_tegrastats(fixture_text("tegrastats_orin_nano_jp6.log"))
    assert len(samples) == 6
    s = samples[0]
    assert s["time"] == "04-27-2026 14:59:41" and s["ram_mb"] == {"used": 775, "total": 7620}
    assert s["swap_mb"] == {"used": 0, "total": 3810}
    assert s["cpu"] == [{"load_pct": 1, "freq_mhz": 729}] + [{"load_pct": 0, "freq_mhz": 729}] * 5
    assert s["gpu"] == {"load_pct": 0, "freq_mhz": None}
    assert s["temperature_c"] == {"cpu": 48.468, "soc2": 47.531, "soc0": 48.062, "gpu": 48.562, "tj": 49.156,
                                  "soc1": 49.156}
    assert s["rails_mw"] == {"VDD_IN": {"now": 4761, "avg": 4778}, "VDD_CPU_GPU_CV": {"now": 515, "avg": 501},
                             "VDD_SOC": {"now": 1428, "avg": 1428}}
    # after `sudo jetson_clocks` the CPUs sit at 1344 MHz and the module draws 6626 mW
    locked = summarise_tegrastats(samples[3:], window_s=2.0, inferences=400, images=3200)
    assert locked["input_rail"] == "VDD_IN" and locked["input_power_mean_mw"] == 6626
    assert locked["energy_mj"] == pytest.approx(6626 * 2.0)  # mW × s = mJ
    assert locked["energy_mj_per_inference"] == pytest.approx(6626 * 2.0 / 400)
    assert locked["energy_mj_per_image"] == pytest.approx(6626 * 2.0 / 3200)
    assert locked["cpu_freq_mhz"] == {"min": 1344, "max": 1344}
    assert locked["temperature_c"]["tj"] == {"first": 50.562, "last": 50.562, "max": 50.593}
    assert "≥ 30 s" in locked["note"]  # a 2 s window is flagged as short for energy
    idle = summarise_tegrastats(samples[:3], window_s=2.0, inferences=400)
    assert idle["input_power_mean_mw"] == 4761 and idle["rails_mean_mw"]["VDD_SOC"] == 1428


def test_tegrastats_other_devices_and_jetpack_4():
    from edgevit.profiling.jetson import input_power_mw, parse_tegrastats

    busy, nano, agx, tx2 = parse_tegrastats(fixture_text("tegrastats_orin_mixed.log"))
    assert busy["gpu"] == {"load_pct": 63, "freq_mhz": 621} and busy["emc"] == {"load_pct": 43, "freq_mhz": 2133}
    assert input_power_mw(busy) == (12479.0, "VDD_IN")
    assert nano["cpu"][4] == {"load_pct": 2, "freq_mhz": 729}
    # AGX Orin: 12 cores, two GPCs, absent sensors (-256C) dropped, no VDD_IN: the rails are summed (NC left out)
    assert len(agx["cpu"]) == 12 and agx["gpu"] == {"load_pct": 0, "freq_mhz": 0}
    assert "CV0" not in agx["temperature_c"] and agx["temperature_c"]["tj"] == 44.343
    power, how = input_power_mw(agx)
    assert power == 2340 + 390 + 4025 + 301 and "VDD_GPU_SOC" in how and "NC" not in how
    # JetPack 4 prints rails without the unit
    assert tx2["time"] is None and tx2["rails_mw"]["VDD_IN"] == {"now": 3140, "avg": 3208}
    assert tx2["temperature_c"]["PMIC"] == 100.0 and tx2["swap_mb"] is None
    assert parse_tegrastats("not a tegrastats line\n") == []
    stamped = parse_tegrastats("1764412345.250000000 " + fixture_text("tegrastats_orin_nano_jp6.log").splitlines()[0])
    assert stamped[0]["unix_time"] == 1764412345.25


def test_nvpmodel_and_jetson_clocks_orin_nano_super():
    from edgevit.profiling.jetson import parse_jetson_clocks, parse_nvpmodel

    text = fixture_text("jetson_clocks_orin_nano_super_jp6.txt")
    nv, jc = text.split("## jetson_clocks --show")
    assert parse_nvpmodel(nv.replace("## nvpmodel -q", "")) == {"name": "15W", "id": 0}
    c = parse_jetson_clocks(jc)
    assert c["soc_family"] == "tegra234" and "Orin Nano" in c["machine"] and c["online_cpus"] == "0-5"
    assert len(c["cpus"]) == 6 and c["cpus"]["cpu2"] == {"online": True, "governor": "schedutil", "min_khz": 729600,
                                                         "max_khz": 1497600, "cur_khz": 1344000}
    assert c["gpu"] == {"min_hz": 306000000, "max_hz": 612000000, "cur_hz": 306000000}
    assert c["emc"]["max_hz"] == 2133000000 and c["emc"]["freq_override"] is False
    assert c["power_mode"] == "15W" and c["active_gpu_tpcs"] == 4 and c["clocks_locked"] is False


def test_jetson_clocks_agx_orin_before_and_after_locking():
    from edgevit.profiling.jetson import parse_jetson_clocks

    before, after = fixture_text("jetson_clocks_agx_orin_30w.txt").split("## after sudo jetson_clocks")
    b, a = parse_jetson_clocks(before), parse_jetson_clocks(after)
    assert b["power_mode"] == a["power_mode"] == "MODE_30W"
    assert len(b["cpus"]) == 12 and not b["cpus"]["cpu8"]["online"] and b["cpus"]["cpu10"]["max_khz"] == 2201600
    assert b["clocks_locked"] is False and a["clocks_locked"] is True  # offline cores do not count
    assert a["gpu"]["min_hz"] == a["gpu"]["max_hz"] == 612000000 and a["emc"]["freq_override"] is True
    assert set(b["engines"]) == {"DLA0_CORE", "DLA0_FALCON", "DLA1_CORE", "DLA1_FALCON", "PVA0_VPS0", "PVA0_AXI"}


def test_trtexec_summaries_times_and_version_mismatch():
    from edgevit.formats.tensorrt.trtexec import (
        engine_version_mismatch,
        parse_trtexec_log,
        parse_trtexec_times,
        tensorrt_version_from_tag,
    )

    orin = parse_trtexec_log(fixture_text("trtexec_orin_jp6_resnet50_fp16.log"))
    assert orin["throughput_qps"] == 318.007 and orin["tensorrt"] == "v100300" and orin["tensorrt_version"] == "10.3.0"
    assert orin["gpu_compute"] == {"min": 3.12671, "max": 3.15479, "mean": 3.14068, "median": 3.14062,
                                   "p90": 3.14587, "p95": 3.14771, "p99": 3.15039}
    assert orin["h2d"]["max"] == 0 and orin["host_walltime_s"] == 3.00622
    dgpu = parse_trtexec_log(fixture_text("trtexec_tensorrt10_summary.log"))
    assert dgpu["latency"]["p90"] == 10.2996 and dgpu["h2d"]["median"] == 0.00814819
    assert dgpu["warnings"][0].startswith("* Throughput may be bound by Enqueue Time")
    trt8 = parse_trtexec_log(fixture_text("trtexec_tensorrt8_cv_warning.log"))
    assert trt8["latency"] == {"min": 1.3476, "max": 1.5657, "mean": 1.38629, "median": 1.38037, "p99": 1.55853}
    assert trt8["cv_percent"] == 2.10486 and "p90" not in trt8["latency"]
    times = parse_trtexec_times((FIXTURES / "trtexec_times_tensorrt10.json").read_text())
    assert len(times["latency"]) == len(times["gpu_compute"]) == 5 and times["gpu_compute"][2] == 3.12671
    assert all(lat >= comp for lat, comp in zip(times["latency"], times["gpu_compute"], strict=True))
    with pytest.raises(ValueError, match="exportTimes"):
        parse_trtexec_times('{"not": "a trace"}')
    assert tensorrt_version_from_tag("v100300") == "10.3.0" and tensorrt_version_from_tag("v8602") == "8.6.2"
    bad = engine_version_mismatch(fixture_text("trtexec_engine_version_mismatch.log"))
    assert bad == {"message": bad["message"], "expected": "10.3.0.30", "got": "10.7.0.23"}
    assert engine_version_mismatch(fixture_text("trtexec_orin_jp6_resnet50_fp16.log")) is None


def test_remote_target_parsing():
    from edgevit.errors import ConfigError
    from edgevit.profiling.ssh import RemoteTarget

    assert RemoteTarget.parse("jetson@orin.local") == RemoteTarget("orin.local", "jetson", 22)
    t = RemoteTarget.parse("me@127.0.0.1:2222")
    assert (t.host, t.user, t.port, t.known_hosts_name) == ("127.0.0.1", "me", 2222, "[127.0.0.1]:2222")
    assert RemoteTarget.parse("u@[::1]:2200").host == "::1" and RemoteTarget.parse("orin").user is None
    for bad in ("", "u@", "u@host:0", "u@host:99999", "u@ho st"):
        with pytest.raises(ConfigError, match="--remote"):
            RemoteTarget.parse(bad)


# ------------------------------------------------------------------------------------------------ a real sshd
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgevit-test", "-f", str(path)],
                   check=True, capture_output=True)


class Sshd:
    def __init__(self, root: Path, port: int, proc: subprocess.Popen, user_key: Path, host_key: Path):
        self.root, self.port, self.proc, self.user_key, self.host_key = root, port, proc, user_key, host_key
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text().split()[0]} "
                                    f"{host_key.with_suffix('.pub').read_text().split()[1]}\n")

    @property
    def target(self) -> str:
        import getpass

        return f"{getpass.getuser()}@127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1:<free port>, key login only, as the current user; stopped afterwards."""
    if SSHD is None:
        pytest.skip("OpenSSH's sshd is not installed (Debian: apt-get install openssh-server; scripts/bootstrap.sh "
                    "does it)")
    root = tmp_path_factory.mktemp("sshd")
    root.chmod(0o700)
    host_key, user_key = root / "host_ed25519", root / "user_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    (root / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    (root / "authorized_keys").chmod(0o600)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
SetEnv PATH={root}/bin:/usr/local/bin:/usr/bin:/bin
LogLevel ERROR
""")
    (root / "bin").mkdir()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd wants when run as root
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited at start: {proc.stderr.read().decode()[-1000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("sshd did not listen within 10 s")
    yield Sshd(root, port, proc, user_key, host_key)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def fmnist_onnx(tmp_path_factory, fmnist_test_small):
    """The shipped fmnist-vit teacher exported to ONNX, with 16 real preprocessed test images."""
    from edgevit.data import preprocess
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.models import create

    model = create("fmnist-vit")
    path = tmp_path_factory.mktemp("model") / "fmnist-vit.onnx"
    # the TorchScript exporter without onnxslim: the same graph family, a few seconds instead of ~30 s here
    export_onnx(model, path, exporter="torchscript", simplify=False, parity_images=fmnist_test_small.subset(range(4)))
    return path, preprocess(fmnist_test_small.images[:16], model.edgevit_spec)


def _session(sshd, **kw):
    from edgevit.profiling.ssh import SSHSession

    kw.setdefault("identity", sshd.user_key)
    kw.setdefault("known_hosts", sshd.known_hosts)
    return SSHSession(sshd.target, **kw)


def test_profile_over_ssh_on_a_jetson_reads_tegrastats_and_the_power_mode(sshd, fmnist_onnx):
    """nvpmodel, jetson_clocks and tegrastats cannot run here: stand-ins on the server's PATH print the recorded
    Orin Nano output (tests/fixtures/jetson), so the whole Jetson path runs through the real sshd: the power-mode
    check, the stamps before/after, tegrastats sampled with the device's Unix time and cut to the timed window."""
    from edgevit.errors import RemoteError
    from edgevit.profiling.remote import profile_remote
    from edgevit.runtimes import open_artifact

    bin_dir = sshd.root / "bin"
    nv, jc = fixture_text("jetson_clocks_orin_nano_super_jp6.txt").split("## jetson_clocks --show")
    lines = fixture_text("tegrastats_orin_nano_jp6.log").splitlines()[3:]
    stand_ins = {
        "nvpmodel": f"#!/bin/sh\ncat <<'EOF'\n{nv.replace('## nvpmodel -q', '').strip()}\nEOF\n",
        "jetson_clocks": f"#!/bin/sh\ncat <<'EOF'\n{jc.strip()}\nEOF\n",
        "tegrastats": "#!/bin/sh\nwhile true; do\n" + "".join(
            f"echo '{ln}'; sleep 0.05\n" for ln in lines) + "done\n",
    }
    try:
        for name, body in stand_ins.items():
            (bin_dir / name).write_text(body)
            (bin_dir / name).chmod(0o755)
        path, images = fmnist_onnx
        art = open_artifact(path)
        with pytest.raises(RemoteError, match=r"power mode 15W \(id 0\), not MAXN.*sudo nvpmodel -m"):
            profile_remote(art, sshd.target, runtime="onnxruntime", inputs=images, runs=5, warmup_s=0.01,
                           python=sys.executable, power_mode="MAXN", identity=sshd.user_key,
                           known_hosts=sshd.known_hosts)
        row = profile_remote(art, sshd.target, runtime="onnxruntime", inputs=images, duration_s=0.6, warmup_s=0.05,
                             python=sys.executable, power_mode="15W", tegrastats_interval_ms=50,
                             identity=sshd.user_key, known_hosts=sshd.known_hosts)[0]
    finally:
        for name in stand_ins:
            (bin_dir / name).unlink(missing_ok=True)
    j = row["jetson"]
    assert j["power_mode"] == {"name": "15W", "id": 0} and j["clocks_locked"] is False
    assert any("sudo jetson_clocks" in w for w in j["warnings"])  # said in plain words
    assert j["clocks_before"]["gpu"]["max_hz"] == 612000000
    ts = j["tegrastats"]
    assert ts["samples"] >= 3 and ts["input_rail"] == "VDD_IN" and ts["input_power_mean_mw"] == 6626
    window = row["remote"]["timed_window_unix"]["end_unix"] - row["remote"]["timed_window_unix"]["start_unix"]
    assert ts["energy_mj_per_inference"] == pytest.approx(6626 * window / row["runs"])
    e = row["energy"]  # the local profiler's energy keys, from tegrastats
    assert e["available"] and e["source"] == "tegrastats" and e["mean_power_w"] == pytest.approx(6.626)
    assert e["millijoules_per_image"] == pytest.approx(ts["energy_mj_per_image"])
    # the sampler was stopped: no stand-in tegrastats of this server is left running on the "device"
    left = subprocess.run(["pgrep", "-f", str(bin_dir / "tegrastats")], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", f"tegrastats left running: {left.stdout}"
    assert row["system"]["jetson"]["power_mode"]["name"] == "15W"


def test_unknown_host_key_is_refused_unless_accepted(sshd, tmp_path):
    from edgevit.errors import HostKeyError
    from edgevit.profiling.ssh import fingerprint

    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match=r"not in .*known_hosts.*ssh-keyscan -p \d+ 127\.0\.0\.1.*"
                                           r"--accept-new-host-key") as err:
        _session(sshd, known_hosts=empty)
    assert not empty.exists()  # nothing was written without asking
    pub = sshd.host_key.with_suffix(".pub").read_text().split()
    import paramiko

    key = paramiko.Ed25519Key(data=__import__("base64").b64decode(pub[1]))
    assert fingerprint(key) in str(err.value)
    with _session(sshd, known_hosts=empty, accept_new_host_key=True) as ssh:
        assert ssh.host_key_added == fingerprint(key)
        assert ssh.run("echo ok").stdout == "ok\n"
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 {pub[1]}" in empty.read_text()
    with _session(sshd, known_hosts=empty) as ssh:  # now known: no prompt, nothing added
        assert ssh.host_key_added is None


def test_host_key_mismatch_is_refused(sshd, tmp_path):
    from edgevit.errors import HostKeyError

    other = tmp_path / "other"
    _keygen(other)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    with pytest.raises(HostKeyError, match=r"HOST KEY MISMATCH for \[127\.0\.0\.1\]:\d+.*ssh-keygen -R"):
        _session(sshd, known_hosts=wrong, accept_new_host_key=True)  # accept-new never overrides a changed key


def test_wrong_key_and_missing_identity(sshd, tmp_path):
    from edgevit.errors import ConfigError, RemoteError

    stranger = tmp_path / "stranger"
    _keygen(stranger)
    with pytest.raises(RemoteError, match=r"refused the key .*stranger.*authorized_keys.*ssh-copy-id"):
        _session(sshd, identity=stranger)
    with pytest.raises(ConfigError, match="no such file"):
        _session(sshd, identity=tmp_path / "absent")


def test_unreachable_port_and_host(tmp_path):
    from edgevit.errors import RemoteError
    from edgevit.profiling.ssh import SSHSession

    pytest.importorskip("paramiko")
    port = _free_port()  # nothing listens there
    with pytest.raises(RemoteError, match=rf"cannot reach 127\.0\.0\.1:{port}: connection refused.*sshd"):
        SSHSession(f"me@127.0.0.1:{port}", known_hosts=tmp_path / "kh", timeout=3)
    with pytest.raises(RemoteError, match="cannot resolve the host name"):
        SSHSession("me@no-such-host.invalid", known_hosts=tmp_path / "kh", timeout=3)


def test_device_without_the_runtime_names_what_to_install(sshd, fmnist_onnx, tmp_path):
    """A 'device' Python without onnxruntime (a venv with only numpy's absence, here: python -S -I) is refused
    before anything is timed, with the package to install."""
    from edgevit.errors import RemoteError
    from edgevit.profiling.remote import profile_remote
    from edgevit.runtimes import open_artifact

    bare = sshd.root / "bin" / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {shutil.which('python3') or '/usr/bin/python3'} -I -S \"$@\"\n")
    bare.chmod(bare.stat().st_mode | stat.S_IEXEC)
    path, images = fmnist_onnx
    try:
        with pytest.raises(RemoteError, match=r"(?s)lacks the runtime '(numpy|onnxruntime)'.*pip3 install"):
            profile_remote(open_artifact(path), sshd.target, runtime="onnxruntime", inputs=images, runs=3,
                           python=str(bare), identity=sshd.user_key, known_hosts=sshd.known_hosts)
        with pytest.raises(RemoteError, match="no Python at"):
            profile_remote(open_artifact(path), sshd.target, runtime="onnxruntime", runs=3,
                           python="/nonexistent/python3", identity=sshd.user_key, known_hosts=sshd.known_hosts)
    finally:
        bare.unlink(missing_ok=True)


def test_benchmark_app_report_and_remote_run(sshd, fmnist_onnx):
    """OpenVINO's own benchmark_app (from this venv's openvino wheel) run through the real sshd on the ONNX file."""
    from edgevit.profiling.benchmark_app import parse_benchmark_app
    from edgevit.profiling.remote import profile_remote
    from edgevit.runtimes import open_artifact

    rec = parse_benchmark_app(fixture_text("benchmark_app_openvino_2026_4.log"))
    assert rec == {"count": 91, "duration_ms": 1005.49, "throughput_fps": 181.01, "devices": ["CPU"],
                   "latency_ms": {"median": 11.48, "mean": 10.94, "min": 2.91, "max": 21.54}}
    with pytest.raises(ValueError, match="did not finish"):
        parse_benchmark_app("[ ERROR ] Exception from src/inference/src/cpp/core.cpp")
    exe = Path(sys.executable).parent / "benchmark_app"
    if not exe.exists():
        pytest.skip("openvino's benchmark_app is not installed in this environment (pip install 'edgevit[openvino]')")
    link = sshd.root / "bin" / "benchmark_app"
    link.symlink_to(exe)
    try:
        path, _ = fmnist_onnx
        row = profile_remote(open_artifact(path), sshd.target, runtime="openvino", tool="benchmark_app",
                             batch_sizes=(2,), runs=10, threads=1, identity=sshd.user_key,
                             known_hosts=sshd.known_hosts)[0]
    finally:
        link.unlink()
    assert row["runs"] == 10 and row["batch"] == 2 and row["input_shape"] == [2, 1, 28, 28]
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"] and row["p90_ms"] is None
    assert row["runtime_info"]["tool"] == "benchmark_app" and row["runtime_info"]["version"].startswith("20")
    assert "benchmark_app" in row["method"] and row["system"]["hostname"] == socket.gethostname()
    assert row["stability"]["coarse"] and row["stability"]["load_avg"]["before"]  # no per-call times: coarse verdict


def test_power_mode_on_a_device_without_nvpmodel(sshd, fmnist_onnx):
    from edgevit.errors import RemoteError
    from edgevit.profiling.remote import profile_remote
    from edgevit.runtimes import open_artifact

    path, images = fmnist_onnx
    with pytest.raises(RemoteError, match="no nvpmodel.*drop --power-mode"):
        profile_remote(open_artifact(path), sshd.target, runtime="onnxruntime", inputs=images, runs=3,
                       python=sys.executable, power_mode="MAXN", identity=sshd.user_key, known_hosts=sshd.known_hosts)


def test_device_script_runs_alone_without_edgevit(fmnist_onnx, tmp_path):
    """The shipped script imports nothing of edgevit: it runs from a copy outside the package, with the package
    made unimportable."""
    from importlib import resources

    path, images = fmnist_onnx
    script = tmp_path / "edgevit_device_profile.py"
    script.write_bytes(resources.files("edgevit.profiling").joinpath("device", script.name).read_bytes())
    np.save(tmp_path / "x.npy", images[:2])
    argv = [str(script), "--model", str(path), "--runtime", "onnxruntime", "--inputs", str(tmp_path / "x.npy"),
            "--batch", "2", "--runs", "4", "--warmup", "0", "--min-warmup", "1", "--out", str(tmp_path / "r.json")]
    code = (f"import sys; sys.modules['edgevit'] = None; sys.argv = {argv!r}; "
            f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, 'exec'))")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": ""}, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "r.json").read_text())
    assert len(out["results"][0]["times_ns"]) == 4 and out["results"][0]["input_shape"] == [2, 1, 28, 28]


# ------------------------------------------------------------------------------------------------ TensorRT bundle
@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory, fmnist_onnx):
    """An fp16 device bundle of the fmnist-vit ONNX file (calibrated on the 16 real images), made for TensorRT 10.3."""
    from edgevit.formats.tensorrt.export import export_tensorrt

    path, images = fmnist_onnx
    out = tmp_path_factory.mktemp("bundle")
    export_tensorrt(path, out, precision="fp16", bundle=True, engine=False, calib_images=images, max_batch=4,
                    trt_version="10.3.0")
    return out


def _trt_stand_ins(bin_dir: Path, *, tag: str, refuse_engine: bool = False) -> list[str]:
    """trtexec cannot run here: a stand-in prints trtexec's banner (``tag``) and the recorded Orin summary, writes
    the recorded --exportTimes trace and the engine file; tegrastats/nvpmodel stand-ins print recorded output."""
    summary = fixture_text("trtexec_orin_jp6_resnet50_fp16.log")
    mismatch = fixture_text("trtexec_engine_version_mismatch.log")
    (bin_dir / "summary.log").write_text(summary)
    (bin_dir / "load.log").write_text(mismatch if refuse_engine else summary)
    (bin_dir / "times.json").write_text((FIXTURES / "trtexec_times_tensorrt10.json").read_text())
    (bin_dir / "tegra.log").write_text(fixture_text("tegrastats_orin_nano_jp6.log"))
    nv = fixture_text("jetson_clocks_orin_nano_super_jp6.txt").split("## jetson_clocks --show")[0]
    scripts = {
        "trtexec": f"""#!/bin/sh
echo "&&&& RUNNING TensorRT.trtexec [TensorRT {tag}] # trtexec $*"
for a in "$@"; do case "$a" in
  --help) echo "  --skipInference   Exit after the engine has been built"; exit 0 ;;
  --saveEngine=*) echo engine > "${{a#--saveEngine=}}" ;;
  --exportTimes=*) cp {bin_dir}/times.json "${{a#--exportTimes=}}" ;;
esac; done
case "$*" in *--loadEngine=*) log={bin_dir}/load.log ;; *) log={bin_dir}/summary.log ;; esac
cat "$log"
grep -q FAILED "$log" && exit 1
exit 0
""",
        "tegrastats": f"""#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --logfile ] && f="$2"; shift; done
cp {bin_dir}/tegra.log "$f"
exec sleep 600
""",
        "nvpmodel": f"#!/bin/sh\ncat <<'EOF'\n{nv.replace('## nvpmodel -q', '').strip()}\nEOF\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return [*scripts, "summary.log", "load.log", "times.json", "tegra.log"]


def test_tensorrt_bundle_over_ssh_builds_profiles_and_parses(sshd, trt_bundle):
    from edgevit.formats.tensorrt.remote import profile_bundle_remote

    made = _trt_stand_ins(sshd.root / "bin", tag="v100300")
    try:
        rows = profile_bundle_remote(trt_bundle, sshd.target, batch_sizes=(2,), energy_s=1,
                                     identity=sshd.user_key, known_hosts=sshd.known_hosts)
    finally:
        for name in made:
            (sshd.root / "bin" / name).unlink(missing_ok=True)
    times = json.loads((FIXTURES / "trtexec_times_tensorrt10.json").read_text())
    assert [r["batch"] for r in rows] == [2]
    r = rows[0]
    assert r["runtime"] == "tensorrt" and r["runs"] == len(times) and r["input_shape"] == [2, 1, 28, 28]
    assert r["median_ms"] == pytest.approx(float(np.median([t["latencyMs"] for t in times])), abs=1e-6)
    assert r["gpu_compute"]["median_ms"] == pytest.approx(float(np.median([t["computeMs"] for t in times])), abs=1e-6)
    assert r["throughput"] == pytest.approx(2 / (r["median_ms"] / 1e3))
    assert r["trtexec"]["end_to_end"]["throughput_qps"] == 318.007 and r["runtime_info"]["version"] == "10.3.0"
    assert r["runtime_info"]["version_note"] is None and r["settings"]["precision"] == "fp16"
    j = r["jetson"]
    assert j["power_mode"] == {"name": "15W", "id": 0}
    assert j["tegrastats"]["samples"] == 6 and j["tegrastats"]["energy_mj_per_inference"] > 0
    assert r["energy"]["available"] and r["energy"]["mean_power_w"] == pytest.approx(
        np.mean([4761] * 3 + [6626] * 3) / 1e3)
    assert r["stability"]["coarse"] and r["stability"]["verdict"] in ("stable", "noisy", "contended")


def test_tensorrt_bundle_for_another_major_version_is_refused(sshd, trt_bundle):
    from edgevit.errors import RemoteError
    from edgevit.formats.tensorrt.remote import profile_bundle_remote

    made = _trt_stand_ins(sshd.root / "bin", tag="v8602")
    try:
        with pytest.raises(RemoteError, match=r"made for TensorRT 10\.3\.0.*device has TensorRT 8\.6\.2.*"
                                              r"--trt-version 8\.6\.2"):
            profile_bundle_remote(trt_bundle, sshd.target, identity=sshd.user_key, known_hosts=sshd.known_hosts)
    finally:
        for name in made:
            (sshd.root / "bin" / name).unlink(missing_ok=True)


def test_tensorrt_engine_from_another_version_and_missing_trtexec(sshd, trt_bundle):
    from edgevit.errors import RemoteError
    from edgevit.formats.tensorrt.remote import profile_bundle_remote

    with pytest.raises(RemoteError, match="no trtexec.*nvidia-jetpack"):
        profile_bundle_remote(trt_bundle, sshd.target, identity=sshd.user_key, known_hosts=sshd.known_hosts)
    made = _trt_stand_ins(sshd.root / "bin", tag="v100300", refuse_engine=True)
    try:
        with pytest.raises(RemoteError, match=r"built by another TensorRT version.*expecting library version "
                                              r"10\.3\.0\.30 got 10\.7\.0\.23.*build\.sh"):
            profile_bundle_remote(trt_bundle, sshd.target, energy_s=0, identity=sshd.user_key,
                                  known_hosts=sshd.known_hosts)
    finally:
        for name in made:
            (sshd.root / "bin" / name).unlink(missing_ok=True)


def test_cli_profile_remote_matches_the_local_schema(sshd, fmnist_onnx, tmp_path, capsys):
    """`edgevit profile m.onnx --remote ... --json p.json`: the device script runs behind the real sshd with
    onnxruntime on real test images; every key of a local profile row is in the remote rows, and the raw times went
    through the same statistics."""
    from edgevit.cli import main
    from edgevit.profiling.latency import profile_runtime
    from edgevit.runtimes import load_runtime, open_artifact

    path, images = fmnist_onnx
    out = tmp_path / "p.json"
    rc = main(["profile", str(path), "--remote", sshd.target, "--runtime", "onnxruntime", "--batch", "1,4",
               "--runs", "12", "--warmup", "0.05", "--threads", "1", "--identity", str(sshd.user_key),
               "--known-hosts", str(sshd.known_hosts), "--remote-python", sys.executable, "--json", str(out)])
    assert rc == 0 and "onnxruntime" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    art = open_artifact(path)
    local = profile_runtime(load_runtime("onnxruntime", art, threads=1), batch_sizes=(1,), warmup_s=0.05,
                            min_warmup=2, runs=3, inputs=images)[0]
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert set(local) - set(r) == set(), f"keys missing from the remote row: {set(local) - set(r)}"
        assert r["runs"] == 12 and r["runtime"] == "onnxruntime" and r["input_shape"][0] == r["batch"]
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["throughput"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        assert r["input_source"].startswith("provided") and r["model"] == local["model"]  # real images were sent
        assert r["runtime_info"]["providers"] == ["CPUExecutionProvider"] and r["runtime_info"]["threads"] == 1
        assert r["remote"]["target"] == sshd.target and r["remote"]["device"]["hostname"] == socket.gethostname()
        assert r["remote"]["timed_window_unix"]["end_unix"] > r["remote"]["timed_window_unix"]["start_unix"]
        assert r["macs"] == local["macs"] and r["params"] == local["params"]
        assert "jetson" not in r  # this "device" has no nvpmodel/tegrastats
        st = r["stability"]  # judged by the local rules from the device's own /proc readings
        assert st["verdict"] in ("stable", "noisy", "contended") and st["message"]
        assert st["run_queue_wait_share"] is not None and st["load_avg"]["before"] and "cv" in st
        assert r["energy"] == {"available": False, "source": "tegrastats",
                               "reason": "no tegrastats on the device (energy is read on Jetsons only)"}
        assert r["memory"]["peak_rss_mb"] > 0
    empty = tmp_path / "known_hosts"  # an unknown host: refused with exit 2 and the way out
    rc = main(["profile", str(path), "--remote", sshd.target, "--runtime", "onnxruntime", "--runs", "3",
               "--identity", str(sshd.user_key), "--known-hosts", str(empty), "--remote-python", sys.executable])
    assert rc == 2 and "--accept-new-host-key" in capsys.readouterr().err


@pytest.mark.slow
def test_torch_model_over_ssh_goes_as_a_torch_export_archive(sshd, fmnist_test_small):
    """--runtime torch on a device: the model travels as a torch.export archive (.pt2), loaded there without
    edgevit. Slow (torch.export here, torch's import on the 'device'); the SSH path is the default tests' path."""
    from edgevit.artifact import Artifact
    from edgevit.data import preprocess
    from edgevit.models import create
    from edgevit.profiling.remote import profile_remote

    model = create("fmnist-vit")
    art = Artifact(kind="torch", spec=model.edgevit_spec, model=model, source="fmnist-vit")
    rows = profile_remote(art, sshd.target, runtime="torch", batch_sizes=(1, 3), runs=5, warmup_s=0.01,
                          inputs=preprocess(fmnist_test_small.images[:3], model.edgevit_spec), threads=1,
                          python=sys.executable, identity=sshd.user_key, known_hosts=sshd.known_hosts)
    assert [r["batch"] for r in rows] == [1, 3] and all(r["runs"] == 5 for r in rows)
    assert rows[0]["runtime_info"]["runtime"] == "torch" and rows[0]["runtime_info"]["threads"] == 1
    assert rows[0]["params"] == sum(p.numel() for p in model.parameters())


def test_a_port_that_is_not_ssh_is_named_as_such(tmp_path, capsys, tiny_onnx):
    """A port that answers but is not sshd (here a plain TCP server that sends an HTTP line): one clear error, no
    paramiko traceback on the terminal."""
    import socket
    import threading

    from edgevit.cli import main

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    onnx = tiny_onnx[0]
    rc = main(["profile", str(onnx), "--runtime", "onnxruntime", "--remote", f"nobody@127.0.0.1:{port}",
               "--known-hosts", str(tmp_path / "kh")])
    err = capsys.readouterr().err
    srv.close()
    assert rc == 2 and "not as an SSH server" in err and "Traceback" not in err and "paramiko" not in err, err
