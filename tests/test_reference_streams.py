"""Every way eib writes a stream still writes the bytes committed in tests/reference (made before the
codec/bitstream restructuring with tests/reference/make_streams.py): compress at λ, compress at a target BPF, the
rate controller's streams and the sweep's streams of given tokens, on the committed synthetic codec."""
import hashlib, json, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "reference"
sys.path.insert(0, str(HERE))
from make_streams import cases  # noqa: E402


def test_streams_are_byte_identical_to_the_committed_ones():
    index = json.loads((HERE / "index.json").read_text())
    got = dict(cases())
    assert sorted(got) == sorted(index)
    for name, data in got.items():
        assert (len(data), hashlib.sha256(data).hexdigest()) == (index[name]["bytes"], index[name]["sha256"]), name
        assert data == (HERE / f"{name}.eib").read_bytes(), name
