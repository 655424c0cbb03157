"""Fuzz test of eib.bitstream: thousands of damaged streams either decode exactly or raise EibError."""
import struct, time, zlib
import numpy as np
import pytest
import torch
from eib.core import EibError
from eib.rvq import RVQConfig, fit_rvq
from eib.entropy import EntropyConfig, EntropyModel
from eib.bitstream import compress_with_result, decompress, fuzz, stream_checksum, stream_info


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Tiny models run much faster on one thread when the machine is shared."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def codec(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(600, 4, generator=g) @ torch.randn(4, 16, generator=g) + 0.3 * torch.randn(600, 16, generator=g)).numpy()
    rvq = fit_rvq(x, RVQConfig(16, 2, 2, 8), iters=4, progress=False)
    model = EntropyModel(EntropyConfig(vocab=9, positions=4, groups=2, layers=2, d_model=16, n_layers=1, n_heads=2, d_ff=32)).eval()
    for w in model.parameters(): w.data.normal_(0, 0.3)
    data, res = compress_with_result((rvq, model), x[:40], 0.5, batch_size=16)
    return rvq, model, data, res.tokens


def test_fuzz_mutations(codec):
    rvq, model, data, tokens = codec
    t0 = time.time()
    out = fuzz((rvq, model), data, tokens, n=3000, seed=1)
    assert time.time() - t0 < 30
    assert out["exact"] + out["eib_error"] == 3000 and out["eib_error"] > 2900


def test_every_truncation_and_bit_flip(codec):
    rvq, model, data, tokens = codec
    for n in range(len(data)):
        with pytest.raises(EibError): decompress((rvq, model), data[:n])
    for i in range(len(data)):
        for bit in range(8):
            b = bytearray(data); b[i] ^= 1 << bit
            with pytest.raises(EibError): decompress((rvq, model), bytes(b))


def test_forged_checksums_never_crash(codec):
    """Payload edits with a recomputed checksum: as format 1 (the container's CRC32, which anyone can recompute) they
    get past the checksum, and the decoder must still return well-formed tokens or raise EibError, never crash or hang;
    as format 2, with the checksum of the original tokens (what a forger without the codec can compute), they are
    all refused."""
    rvq, model, data, tokens = codec
    s = stream_info(data)
    rng = np.random.default_rng(2)
    for _ in range(200):
        b = bytearray(data[:-4])
        i = s.header_len + int(rng.integers(s.payload_len))
        b[i] ^= 1 << int(rng.integers(8))
        with pytest.raises(EibError): decompress((rvq, model), bytes(b) + struct.pack("<I", stream_checksum(bytes(b), tokens)))
        b[3] = 1
        try: t, y = decompress((rvq, model), bytes(b) + struct.pack("<I", zlib.crc32(bytes(b))))
        except EibError: continue
        assert t.shape == tokens.shape and int(t.min()) >= 0 and int(t.max()) <= rvq.cfg.skip and np.isfinite(y).all()
