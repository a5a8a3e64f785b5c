import pytest

from edgevit._optional import available, require
from edgevit.errors import MissingBackendError


def test_missing_backend_names_the_extra():
    with pytest.raises(MissingBackendError) as e:
        require("edgevit_no_such_backend", extra="openvino", feature="OpenVINO export")
    msg = str(e.value)
    assert "OpenVINO export needs the Python package 'edgevit_no_such_backend'" in msg
    assert "pip install 'edgevit[openvino]'" in msg
    assert isinstance(e.value, ImportError) and isinstance(e.value.__cause__, ImportError)


def test_available():
    assert available("numpy") and not available("edgevit_no_such_backend")
