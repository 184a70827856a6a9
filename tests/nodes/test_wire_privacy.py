"""What crosses the loopback during a job: captured with a raw packet socket, reassembled per TCP flow.

A dealer process and three `prover serve` processes run one job of the shipped model while this
test records every TCP payload on `lo`. The prompt's text and token ids (as int64 and int32, and
its plaintext one-hot rows), the reconstructed logits (ring-encoded and as float32), every node's
weight share, the plaintext weights and the dealer's party seeds must appear in no flow; the job
id and the sealed-channel tag must (so the capture saw the job).
"""
from __future__ import annotations

import socket
import struct
import threading

import pytest
import torch
from safetensors.torch import load_file

from mpc_core.dealer import TrustedDealer
from mpc_core.domains import CHANNEL_MSG
from mpc_core.encoding import decode_cbor, tensor_bytes
from mpc_core.ring import encode
from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
from sim.process_network import ProcessNetwork

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6
PROMPT = "And Moses said unto the LORD,"


class LoopbackCapture:
    """Every TCP payload seen on `lo` (incoming copies only), kept per flow with its sequence number."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 256 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.segments: dict[tuple, list[tuple[int, bytes]]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LoopbackCapture":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)
        _packets, self.dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # each loopback packet is seen leaving and arriving; keep one copy
            self._add(frame)

    def _add(self, frame: bytes) -> None:
        ethertype = struct.unpack("!H", frame[12:14])[0]
        ip = frame[14:]
        if ethertype == 0x0800:
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 6:
                return
            total = struct.unpack("!H", ip[2:4])[0]
            src, dst, tcp = ip[12:16], ip[16:20], ip[ihl:total]
        elif ethertype == 0x86DD:
            if ip[6] != 6:
                return
            plen = struct.unpack("!H", ip[4:6])[0]
            src, dst, tcp = ip[8:24], ip[24:40], ip[40:40 + plen]
        else:
            return
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            self.segments.setdefault((src, sport, dst, dport), []).append((seq, bytes(payload)))

    def streams(self) -> list[bytes]:
        """Each flow's bytes in sequence order (retransmissions and overlaps removed)."""
        out = []
        for segs in self.segments.values():
            buf, end = bytearray(), None
            for seq, data in sorted(segs, key=lambda s: s[0]):
                if end is not None and seq < end:
                    data = data[end - seq:]
                    seq = end
                buf += data
                end = seq + len(data) if data else end
            out.append(bytes(buf))
        return out


def _windows(t: torch.Tensor, n: int = 3, width: int = 8) -> list[bytes]:
    """`n` byte windows of `width` consecutive elements spread over tensor `t`."""
    flat = t.reshape(-1)
    step = max(1, (flat.numel() - width) // n)
    return [flat[i:i + width].contiguous().numpy().tobytes() for i in range(0, step * n, step) if i + width <= flat.numel()]


def _send_control_bytes() -> bytes:
    """Send 1 MiB of random bytes over a fresh loopback TCP connection; returns them."""
    data = torch.randint(0, 256, (1 << 20,), dtype=torch.uint8).numpy().tobytes()
    with socket.create_server(("127.0.0.1", 0)) as srv:
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        cli.sendall(data)
        cli.close()
        got = bytearray()
        while chunk := conn.recv(1 << 16):
            got += chunk
        conn.close()
    return data


@pytest.fixture
def capture_permitted():
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        pytest.skip("raw packet capture needs CAP_NET_RAW (run the suite as root)")


def test_no_secret_crosses_the_loopback(tmp_path, capture_permitted):
    model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    ids = tok.encode(PROMPT)
    with ProcessNetwork(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path, n_nodes=3, seed=5, timeout_s=120) as net:
        model_id = net.publish(model, TINY_MODEL_DIR)
        net.start()
        assert net.wait_ready(120), net.logs()
        with LoopbackCapture() as cap:
            control = _send_control_bytes()
            out = net.run_job(model_id, ids, 2, "wire-job", keep_logits=True)
        drops = cap.dropped
        streams = cap.streams()
        dealer_state = decode_cbor((net.data_dir("dealer") / "dealer" / "dealer-wire-job.cbor").read_bytes())
        shares = [load_file(str(net.data_dir(k.node_id) / "models" / model_id / f"party{i}" / "share.safetensors"))
                  for i, k in enumerate(net.nodes)]
    assert drops == 0, f"the capture dropped {drops} packets; its verdict would mean nothing"
    wire = b"".join(streams)
    assert b"wire-job" in wire and CHANNEL_MSG in wire, "the capture did not see the job's traffic"
    # Positive control: 1 MiB sent in clear over a loopback TCP connection is found whole,
    # and the secret-shaped window inside it too (the search would catch a leak).
    assert any(control in st for st in streams) and any(control[300_000:300_064] in st for st in streams)

    onehot = torch.zeros(len(ids), model.config.vocab_size, dtype=torch.int64)
    onehot[torch.arange(len(ids)), torch.tensor(ids)] = 1
    needles: dict[str, bytes] = {
        "prompt text": PROMPT.encode(),
        "prompt ids (int64)": tensor_bytes(torch.tensor(ids, dtype=torch.int64)),
        "prompt ids (int32)": torch.tensor(ids, dtype=torch.int32).numpy().tobytes(),
        "prompt one-hot row 0": tensor_bytes(onehot[0].contiguous()),
        "prompt one-hot row 1": tensor_bytes(onehot[1].contiguous()),
    }
    for step, ring in enumerate(out["logits"]):
        for k, w in enumerate(_windows(ring)):
            needles[f"logits step {step} (ring) #{k}"] = w
        for k, w in enumerate(_windows((ring.double() / 2**16).float())):
            needles[f"logits step {step} (float32) #{k}"] = w
    weight_names = ("transformer.wte.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.h.3.attn.c_proj.weight")
    assert all(name in shares[0] for name in weight_names)
    for name in weight_names:
        for p, share in enumerate(shares):
            for k, w in enumerate(_windows(share[name])):
                needles[f"{name} share of party {p} #{k}"] = w
        plain = dict(model.named_parameters())[name].detach()
        for k, w in enumerate(_windows(encode(plain.double(), 16))):
            needles[f"{name} plaintext (ring) #{k}"] = w
        for k, w in enumerate(_windows(plain.float())):
            needles[f"{name} plaintext (float32) #{k}"] = w
    dealer = TrustedDealer(bytes(dealer_state["master_seed"]), b"wire-job", 3)
    for p in range(3):
        needles[f"dealer seed of party {p}"] = dealer.party_seed(p)
    assert len(needles) > 40
    leaked = [name for name, needle in needles.items() if any(needle in s for s in streams)]
    assert leaked == [], f"secrets on the wire: {leaked}"
