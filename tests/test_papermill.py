"papermill runs a chapter in the venv with the kernel named `python3` that `make setup` registers."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_python3_is_this_venv():
    out = subprocess.run([Path(sys.executable).parent / "jupyter", "kernelspec", "list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    spec = json.loads(out)["kernelspecs"]["python3"]
    assert Path(spec["resource_dir"]).resolve().is_relative_to(Path(sys.prefix).resolve()), spec["resource_dir"]


def test_papermill_executes_a_chapter(tmp_path):
    out = tmp_path / "core.ipynb"
    subprocess.run([Path(sys.executable).parent / "papermill", str(ROOT / "nbs" / "00_core.ipynb"), str(out),
                    "-k", "python3", "--cwd", str(ROOT / "nbs"), "--log-level", "WARNING"], check=True)
    nb = json.loads(out.read_text())
    assert not nb["metadata"]["papermill"]["exception"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] for c in code if "".join(c["source"]).strip())
