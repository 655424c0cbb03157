"""Every way eib writes a stream still writes the bytes committed in tests/reference (made before the
codec/bitstream restructuring with tests/reference/make_streams.py, in format version 1): compress at λ, compress at
a target BPF, the rate controller's streams and the sweep's streams of given tokens, on the committed synthetic codec.
Format version 2 changed only what the final CRC32 covers (the container and the decoded tokens), so a stream written
now is the committed one with its version byte 2 and that checksum; the committed version-1 streams still decode, to
the same tokens."""
import hashlib, json, struct, sys
from pathlib import Path

from eib.core import repo_root
from eib.codec import load_codec
from eib.bitstream import decompress, stream_checksum, stream_info

HERE = Path(__file__).resolve().parent / "reference"
sys.path.insert(0, str(HERE))
from make_streams import cases  # noqa: E402


def test_streams_are_the_committed_ones_in_format_2():
    index = json.loads((HERE / "index.json").read_text())
    got = dict(cases())
    assert sorted(got) == sorted(index)
    codecs = {n: load_codec(repo_root() / "checkpoints" / n) for n in ("synth_cpu", "synth_cpu_layers")}
    for name, data in got.items():
        ref = (HERE / f"{name}.eib").read_bytes()
        assert (len(ref), hashlib.sha256(ref).hexdigest()) == (index[name]["bytes"], index[name]["sha256"]), name
        assert (stream_info(ref).version, stream_info(data).version) == (1, 2), name
        assert data[:-4] == ref[:3] + b"\x02" + ref[4:-4], name  # the same container and payload, byte for byte
        codec = codecs["synth_cpu_layers" if name.endswith(".layers7") else "synth_cpu"]
        tokens = decompress(codec, ref)[0]  # the version-1 stream still decodes
        assert data[-4:] == struct.pack("<I", stream_checksum(data[:-4], tokens)), name
        assert decompress(codec, data)[0].equal(tokens), name


def test_context_streams_are_the_committed_ones():
    """The synthetic codec's twin with inter-frame context (checkpoints/synth_cpu_context_frame) still writes the streams
    committed in tests/reference/context, byte for byte, and they decode to the same tokens: frame after frame, each given
    the frame decoded before it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("context_streams", HERE / "context" / "make_streams.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    index = json.loads((HERE / "context" / "index.json").read_text())
    got = dict(mod.cases())
    assert sorted(got) == sorted(index)
    codec = load_codec(repo_root() / "checkpoints" / "synth_cpu_context_frame")
    for name, data in got.items():
        ref = (HERE / "context" / f"{name}.eib").read_bytes()
        assert (len(ref), hashlib.sha256(ref).hexdigest()) == (index[name]["bytes"], index[name]["sha256"]), name
        assert data == ref, name
        assert stream_info(ref).version == 2, name
        u = name.split(".")[0]
        assert decompress(codec, ref)[0].equal(decompress(codec, got[f"{u}.tokens40"])[0]) == name.endswith("40"), name
