"""edgevit.registry: the one name → object pattern behind stages, runtimes, models, formats and hardware profiles.

Direct tests of the public behaviour (duplicate names, unknown names with allowed values and close matches, the
decorator form, lazy loading), then the same promises on the real registries a user meets through the CLI.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgevit.errors import EdgevitError, RegistryError
from edgevit.registry import Registry, lazy


def test_register_get_and_listing_are_sorted():
    reg: Registry[int] = Registry("widget")
    assert reg.register("zeta", 3) == 3
    reg.register("alpha", 1)
    reg.register("mid", 2)
    assert reg.get("alpha") == 1 and reg.get("zeta") == 3
    assert reg.names() == ["alpha", "mid", "zeta"] == list(reg)
    assert reg.items() == [("alpha", 1), ("mid", 2), ("zeta", 3)]
    assert "mid" in reg and "MID" not in reg and "nothing" not in reg


def test_duplicate_registration_raises_and_keeps_the_first():
    reg: Registry[str] = Registry("widget")
    reg.register("a", "first")
    with pytest.raises(RegistryError, match=r"^.*widget 'a' is already registered \('first'\)"):
        reg.register("a", "second")
    assert reg.get("a") == "first"
    reg.register("a", "third", replace=True)  # explicit replacement is allowed
    assert reg.get("a") == "third" and reg.names() == ["a"]


def test_registry_error_is_catchable_as_keyerror_and_edgevit_error():
    reg: Registry[int] = Registry("widget")
    for exc_type in (RegistryError, KeyError, EdgevitError):
        with pytest.raises(exc_type):
            reg.get("missing")


def test_unknown_name_lists_allowed_values_and_close_matches():
    reg: Registry[int] = Registry("runtime")
    for i, name in enumerate(["onnxruntime", "openvino", "torch", "tvm"]):
        reg.register(name, i)
    with pytest.raises(RegistryError) as info:
        reg.get("onnxruntim")
    msg = str(info.value.args[0])
    assert msg == ("unknown runtime 'onnxruntim'. Allowed: onnxruntime, openvino, torch, tvm. "
                   "Did you mean 'onnxruntime'?")
    far = reg.unknown_message("xyzzy")  # nothing close: the allowed values, no guess
    assert far == "unknown runtime 'xyzzy'. Allowed: onnxruntime, openvino, torch, tvm."
    assert Registry("thing").unknown_message("x") == "unknown thing 'x'. Allowed: (none)."


def test_decorator_form_registers_and_returns_the_object():
    reg: Registry[type] = Registry("stage")

    @reg.register("mine")
    class Mine:
        pass

    assert reg.get("mine") is Mine and Mine.__name__ == "Mine"  # the decorator hands the class back unchanged

    with pytest.raises(RegistryError, match="already registered"):
        @reg.register("mine")
        class Other:
            pass


def test_lazy_loader_imports_only_when_called():
    """lazy() must not import its module until called; run in a fresh interpreter so sys.modules is clean."""
    code = (
        "import sys\n"
        "from edgevit.registry import lazy\n"
        "load = lazy('json.decoder', 'JSONDecoder')\n"
        "before = 'json.decoder' in sys.modules\n"
        "cls = load()\n"
        "import json.decoder\n"
        "print(before, cls is json.decoder.JSONDecoder, 'json.decoder.JSONDecoder' in load.__qualname__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stderr


def test_lazy_loader_errors_surface_when_called_not_when_registered():
    reg = Registry("runtime")
    reg.register("ghost", lazy("edgevit.no_such_module_here", "Ghost"))
    assert "ghost" in reg  # registering never imports
    with pytest.raises(ModuleNotFoundError, match="edgevit.no_such_module_here"):
        reg.get("ghost")()
    reg.register("bad_attr", lazy("edgevit.registry", "NoSuchName"))
    with pytest.raises(AttributeError, match="NoSuchName"):
        reg.get("bad_attr")()


def test_real_registries_list_allowed_values_and_close_matches():
    from edgevit.models import MODELS
    from edgevit.profiling.hardware import HARDWARE
    from edgevit.runtimes import RUNTIMES
    from edgevit.stages import STAGES

    with pytest.raises(RegistryError, match=r"unknown stage 'export_onx'\. Allowed: .*export_onnx.*"
                                            r"Did you mean 'export_onnx'"):
        STAGES.get("export_onx")
    with pytest.raises(RegistryError, match=r"unknown runtime 'openvion'\. Allowed: .*onnxruntime.*openvino.*torch"):
        RUNTIMES.get("openvion")
    with pytest.raises(RegistryError, match=r"Did you mean 'fmnist-vit-tiny'"):
        MODELS.get("fmnist-vit-tinny")
    with pytest.raises(RegistryError, match=r"unknown hardware profile 'raspberry-pi-6'.*'raspberry-pi-5'"):
        HARDWARE.get("raspberry-pi-6")


def test_real_runtime_registry_is_lazy():
    """`import edgevit.runtimes` lists every runtime without importing any backend."""
    code = ("import sys; from edgevit.runtimes import RUNTIMES; names = RUNTIMES.names(); "
            "print(','.join(names)); print([m for m in ('torch', 'onnxruntime', 'openvino', 'tvm', 'tensorrt') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = out.stdout.strip().splitlines()
    assert {"torch", "onnxruntime"} <= set(names.split(",")) and heavy == "[]"


def test_cli_reports_unknown_runtime_with_allowed_values(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgevit", "eval", "--model", "fmnist-vit-tiny", "--runtime",
                        "onnxruntim", "--limit", "2"], capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 2
    assert "unknown runtime 'onnxruntim'" in r.stderr and "Did you mean 'onnxruntime'" in r.stderr
