import subprocess
import sys

import asya_operator


def test_version_is_exposed() -> None:
    assert asya_operator.__version__.count(".") == 2


def test_controller_refuses_honestly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asya_operator"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "not implemented yet" in proc.stderr
