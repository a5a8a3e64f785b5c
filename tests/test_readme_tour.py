"""The README's "Five-minute tour", run as a user runs it.

The commands are read from the ```bash block under "## Five-minute tour" in README.md, so README and test stay in
sync: a command added to the tour without a rule in RULES below fails ``test_every_tour_command_has_a_rule``.
Each command runs through the real ``edgevit`` CLI (``python -m edgevit``, the same entry point as the console
script) in one temporary working directory, in README order (later commands use earlier outputs: runs/x/model.onnx,
cache/, runs/ee/, ...), with the small limits of the substitution table RULES. Every command must exit 0; every
``--json FILE`` must be written, and for the commands in the README's key table it must hold the documented keys.

Cheap commands run in the default selection; the expensive ones are marked ``slow``. Run the whole tour with
``make test-all`` or ``pytest -m "" tests/test_readme_tour.py`` (not ``-m slow`` alone: some slow commands use the
outputs of cheap ones, e.g. the TensorRT bundle reads runs/x/model.onnx and torchrun reads cache/). No cheap
command uses a slow command's output. Measured on the shared 2-core build machine: default part ~2 min.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@dataclass(frozen=True)
class Rule:
    """How the test runs one tour command: ``replace`` swaps argument tokens (old → new), ``add`` appends
    arguments; ``slow`` leaves it out of the default run; ``skip`` gives the reason it cannot run here."""

    prefix: str
    add: tuple[str, ...] = ()
    replace: dict[str, str] = field(default_factory=dict)
    slow: bool = False
    skip: str | None = None


FAST_PROFILE = ("--duration", "0.2", "--warmup", "0.05")
# Substitution table: the first rule whose prefix starts the command applies (so longer prefixes come first).
RULES: tuple[Rule, ...] = (
    Rule("source .venv/bin/activate", skip="the test already runs the CLI of the interpreter running pytest"),
    Rule("edgevit --help"),
    Rule("edgevit list "),
    Rule("edgevit eval --model fmnist-vit", add=("--limit", "50")),
    Rule("edgevit export onnx", add=("--parity-samples", "16")),
    Rule("edgevit eval --artifact runs/x/model.onnx", add=("--limit", "50")),
    Rule("edgevit profile runs/x/model.onnx --remote", skip="needs a device reachable over SSH; tests/test_remote.py "
         "runs --remote against a real OpenSSH server on 127.0.0.1"),
    Rule("edgevit profile runs/x/trt/ --remote", skip="needs a device with TensorRT over SSH; tests/test_remote.py "
         "runs the bundle path through a real OpenSSH server with a stand-in trtexec"),
    Rule("edgevit profile runs/x/model.onnx --runtime onnxruntime --until-stable", replace={"60": "1"},
         add=FAST_PROFILE),
    # the INT8 IR comes from the (slow) quantize command; the default run compares torch only
    # (tests/test_per_layer.py compares an INT8 model)
    Rule("edgevit profile runs/x/model.onnx --runtime onnxruntime,openvino --batch 1,8 --per-layer",
         replace={"fmnist-vit,runs/q/model_int8.xml": "fmnist-vit"}, add=FAST_PROFILE),
    Rule("edgevit profile runs/x/model.onnx", add=FAST_PROFILE),
    Rule("edgevit predict runs/x/model.onnx"),
    Rule("edgevit export openvino", add=("--parity-samples", "16"), slow=True),
    Rule("edgevit export tvm --model runs/sa/", replace={"64": "0"}, add=("--parity-samples", "4"), slow=True),
    Rule("edgevit export tvm", add=("--parity-samples", "4"), slow=True),  # builds deit_tiny at 224×224
    Rule("edgevit export ort-mobile", add=("--parity-samples", "16")),
    # --bundle: ONNX + INT8 calibration cache + build.sh/profile.sh; builds no engine, so no TensorRT needed
    Rule("edgevit export tensorrt", add=("--calib-samples", "32", "--parity-samples", "16"), slow=True),
    Rule("edgevit eval --artifact runs/x/ov/", replace={"1000": "50"}, slow=True),
    Rule("edgevit data sample"),
    Rule("examples/cpp/build.sh", skip="C++ build (cmake + compiler, minutes); tests/test_cpp_consumer.py builds and "
                                      "runs examples/cpp on real images"),
    Rule("edgevit quantize --model fmnist-vit --backend openvino",
         add=("--calib-samples", "32", "--limit", "100", "--latency-s", "0.2"), slow=True),
    Rule("edgevit quantize --model fmnist-vit --backend onnxruntime",
         add=("--calib-samples", "32", "--limit", "100", "--latency-s", "0.2"), slow=True),
    Rule("edgevit distill cache", replace={"10": "1"}, add=("--limit", "64")),
    Rule("edgevit distill train", replace={"10": "1"}, add=("--limit", "64", "--eval-limit", "50")),
    Rule("torchrun", replace={"10": "1"}, add=("--limit", "64", "--eval-limit", "50"), slow=True),
    Rule("edgevit early-exit train", replace={"3": "1"}, add=("--limit", "512", "--holdout", "128"), slow=True),
    Rule("edgevit early-exit calibrate", add=("--heldout-limit", "128", *FAST_PROFILE), slow=True),
    Rule("edgevit early-exit export", add=("--parity-samples", "16"), slow=True),
    Rule("edgevit eval --artifact runs/ee/", add=("--limit", "50"), slow=True),
    Rule("edgevit shiftadd convert", add=("--calib-samples", "16", "--eval-limit", "32"), slow=True),
    Rule("edgevit shiftadd finetune", add=("--steps", "2", "--limit", "64", "--eval-limit", "32"), slow=True),
    Rule("edgevit eval --artifact runs/sa/", add=("--limit", "20"), slow=True),
    Rule("edgevit early-exit quantize", add=("--calib-samples", "32", "--parity-samples", "16"), slow=True),
    Rule("edgevit profile runs/ee/", add=FAST_PROFILE, slow=True),
    Rule("edgevit compress examples/recipes/quickstart.yaml --out runs/demo --dry-run"),
    Rule("edgevit compress examples/recipes/minimal.yaml --out runs/demo --set",
         replace={"data.limit=1000": "data.limit=40"},
         add=("--set", "stages.3.duration_s=0.2", "--set", "stages.3.warmup_s=0.05", "--set", "stages.3.min_runs=3"),
         slow=True),
)


def tour_commands() -> list[str]:
    """The commands of the bash block under '## Five-minute tour', comments removed, in order."""
    text = README.read_text()
    section = text.split("## Five-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README: no ```bash block under '## Five-minute tour'"
    cmds = []
    for line in re.sub(r"\\\n\s*", " ", block.group(1)).splitlines():  # join `\` continuation lines
        cmd = " ".join(shlex.split(line, comments=True))
        if cmd:
            cmds.append(cmd)
    return cmds


def rule_for(cmd: str) -> Rule | None:
    return next((r for r in RULES if cmd.startswith(r.prefix)), None)


def documented_json_keys() -> dict[str, list[str]]:
    """The README's '--json FILE ... stable key names' table: command → keys (in the order written)."""
    text = README.read_text()
    out = {}
    for m in re.finditer(r"^\| `([a-z -]+)` \| (.+) \|$", text, flags=re.MULTILINE):
        if "`" in m.group(2):
            out[m.group(1)] = re.findall(r"`([a-z0-9_]+)`", m.group(2))
    return out


def adapted(cmd: str, rule: Rule) -> list[str]:
    args = [rule.replace.get(a, a) for a in shlex.split(cmd)] + list(rule.add)
    if args[0] == "edgevit":
        return [sys.executable, "-m", "edgevit", *args[1:]]
    if args[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *args[1:]]
    return args


def _cases():
    cases = []
    for i, cmd in enumerate(tour_commands()):
        rule = rule_for(cmd)
        marks = [pytest.mark.slow] if rule is not None and rule.slow else []
        cases.append(pytest.param(i, cmd, marks=marks, id=f"{i:02d}-{' '.join(cmd.split()[:4])}"))
    return cases


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's working directory: the repository's examples/ (the recipes the tour names) and nothing else."""
    d = tmp_path_factory.mktemp("tour")
    shutil.copytree(ROOT / "examples" / "recipes", d / "examples" / "recipes")
    return d


def test_every_tour_command_has_a_rule():
    cmds = tour_commands()
    assert len(cmds) >= 20 and cmds[1] == "edgevit --help"
    missing = [c for c in cmds if rule_for(c) is None]
    assert not missing, f"README tour commands without a rule in RULES (add one: limits, slow or skip): {missing}"
    unused = [r.prefix for r in RULES if not any(c.startswith(r.prefix) for c in cmds)]
    assert not unused, f"RULES for commands no longer in the README tour: {unused}"
    for r in RULES:
        for old in r.replace:
            assert any(old in shlex.split(c) for c in cmds if c.startswith(r.prefix)), (r.prefix, old)


def test_json_key_table_is_parsed():
    keys = documented_json_keys()
    assert set(keys) == {"eval", "export onnx", "profile", "profile --per-layer", "predict"}
    assert keys["predict"][0] == "predictions"
    assert keys["eval"][:3] == ["top1", "top5", "n"] and keys["profile"][0] == "results"


@pytest.mark.parametrize("index, cmd", _cases())
def test_tour_command(index, cmd, workdir, fmnist_test_small, teacher_available):
    rule = rule_for(cmd)
    assert rule is not None, cmd
    if rule.skip:
        pytest.skip(rule.skip)
    if "fmnist-vit" in cmd and not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    argv = adapted(cmd, rule)
    env = dict(os.environ, EDGEVIT_PROGRESS="0")
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500, check=False)
    seconds = time.perf_counter() - t0
    print(f"[tour] {seconds:6.1f} s  {shlex.join(argv[2:] if argv[0] == sys.executable else argv)}")
    assert r.returncode == 0, f"{cmd!r} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"

    args = shlex.split(cmd)
    if "--json" in args:
        doc = json.loads((workdir / args[args.index("--json") + 1]).read_text())
        assert isinstance(doc, dict) and doc
        keys = documented_json_keys()
        sub = args[1] if args[1] != "export" else f"export {args[2]}"
        if sub in ("eval", "export onnx"):
            assert set(keys[sub]) <= set(doc), f"{cmd}: missing {set(keys[sub]) - set(doc)}"
        elif sub == "profile":
            rows = doc[keys["profile"][0]]
            batches = [int(b) for b in args[args.index("--batch") + 1].split(",")]
            runtimes = args[args.index("--runtime") + 1].split(",")
            assert sorted({row["batch"] for row in rows}) == sorted(batches)  # every batch, for every runtime
            assert {row["runtime"] for row in rows} >= set(runtimes) and len(rows) >= len(batches) * len(runtimes)
            for row in rows:
                assert set(keys["profile"][1:]) <= set(row), f"{cmd}: missing {set(keys['profile'][1:]) - set(row)}"
                assert row["median_ms"] <= row["p90_ms"] <= row["p99_ms"]
                assert row["system"]["cpu"] and row["system"]["versions"]
        elif sub == "predict":
            rows = doc[keys["predict"][0]]
            targets, dtypes = (args[args.index(f) + 1].split(",") for f in ("--target", "--dtype"))
            assert [(r["target"], r["dtype"]) for r in rows] == [(t, d) for t in targets for d in dtypes]
            for row in rows:
                assert set(keys["predict"][1:]) <= set(row), f"{cmd}: missing {set(keys['predict'][1:]) - set(row)}"
    if args[:2] == ["edgevit", "--help"] or args[:2] == ["edgevit", "list"]:
        assert r.stdout.strip()
    if "--dry-run" in args:
        assert "run    08_export_onnx" in r.stdout and "07_quantize          cascade:onnx → cascade:onnx" in r.stdout
        assert "11_export_tvm        cascade:onnx → cascade:tvm" in r.stdout and not (workdir / "runs" / "demo").exists()
    if "--out" in args and "--dry-run" not in args:
        out = workdir / args[args.index("--out") + 1]
        assert out.exists(), f"{cmd}: --out {out} was not written"
    if args[:2] == ["edgevit", "compress"] and "--dry-run" not in args:
        assert (workdir / "runs" / "demo" / "report.md").exists()
