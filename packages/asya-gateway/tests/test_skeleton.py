import subprocess
import sys

import asya_gateway


def test_version_is_exposed() -> None:
    assert asya_gateway.__version__.count(".") == 2


def test_entry_point_refuses_honestly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asya_gateway"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "not implemented yet" in proc.stderr
