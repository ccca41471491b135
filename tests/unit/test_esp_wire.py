"""ESP in UDP (vxlan_dp/wire/esp.py) and network keys (vxlan_dp/core/keys.py), no I/O.

Known answers from the GCM specification (McGrew & Viega, test cases 14 and 16, AES-256) and
RFC 8439 sec. 2.8.2, which is the ESP case of RFC 7634 (salt 07000000, IV 4041424344454647,
AAD = SPI 50515253 | ESN c0c1c2c3c4c5c6c7). Scapy's SecurityAssociation is the independent
judge of the framing: it decrypts what we seal, and we open what it encrypts.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from vxlan_dp.core.keys import (KeyFileError, KeyRing, check_key_file_mode, derive_keymat,
                                format_keys, load_key_file, make_spi, parse_keys, split_spi)
from vxlan_dp.wire import WireError, encapsulate, internet_checksum
from vxlan_dp.wire.esp import (ESP_MIN_LEN, REPLAY_WINDOW, ReplayWindow, aead_open, aead_seal,
                               decode_esp, encode_esp, esp_aad, esp_seq, seal_packet)

H = bytes.fromhex
GCM_KEY = H("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_PT = H("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
GCM_CT16 = H("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
             "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662")
CHACHA_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
             b"the future, sunscreen would be it.")
CHACHA_CT = H("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
              "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
              "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
              "3ff4def08e4b7a9de576d26586cec64b6116")

# (cipher, key material = key | salt, IV, AAD, plaintext, ciphertext | ICV)
KATS = {
    "gcm-spec-14": ("aes-256-gcm", bytes(36), bytes(8), b"", bytes(16),
                    H("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")),
    "gcm-spec-16": ("aes-256-gcm", GCM_KEY + H("cafebabe"), H("facedbaddecaf888"),
                    H("feedfacedeadbeeffeedfacedeadbeefabaddad2"), GCM_PT,
                    GCM_CT16 + H("76fc6ece0f4e1768cddf8853bb2d551b")),
    "rfc7634-esp": ("chacha20-poly1305", bytes(range(0x80, 0xA0)) + H("07000000"),
                    H("4041424344454647"), esp_aad(0x50515253, 0xC0C1C2C3C4C5C6C7), CHACHA_PT,
                    CHACHA_CT + H("1ae10b594f09e26a7e902ecbd0600691")),
}
SCAPY_ALGO = {"aes-256-gcm": "AES-GCM", "chacha20-poly1305": "CHACHA20-POLY1305"}
V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:2::1", "2001:2::2")


@pytest.mark.parametrize("name", sorted(KATS))
def test_known_answers(name):
    cipher, keymat, iv, aad, pt, sealed = KATS[name]
    assert aead_seal(cipher, keymat, iv, aad, pt) == sealed
    assert aead_open(cipher, keymat, iv, aad, sealed) == pt
    for i in (0, len(sealed) // 2, len(sealed) - 1):    # one flipped bit: refused
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        assert aead_open(cipher, keymat, iv, aad, bytes(bad)) is None
    assert aead_open(cipher, keymat, iv, aad[:-1] + b"\x00" if aad else b"x", sealed) is None


def test_rfc7634_vector_read_as_an_esp_packet():
    """SPI | seq low | IV | the vector's ciphertext and ICV is an ESP packet our decoder
    authenticates with ESN c0c1c2c3c4c5c6c7 (the vector's text ends in "t.", which as an ESP
    trailer is pad length 0x74: more than the payload, so it is then refused as malformed),
    and refuses as forged under any other high half."""
    cipher, keymat, iv, _aad, _pt, sealed = KATS["rfc7634-esp"]
    spi, seq = 0x50515253, 0xC0C1C2C3C4C5C6C7
    pkt = struct.pack("!II", spi, seq & 0xFFFFFFFF) + iv + sealed
    with pytest.raises(WireError) as ei:
        decode_esp(cipher, keymat, pkt, seq)
    assert ei.value.reason == "malformed"
    with pytest.raises(WireError) as ei:
        decode_esp(cipher, keymat, pkt, seq ^ (1 << 40))
    assert ei.value.reason == "esp_auth"


def _frame(n: int = 64) -> bytes:
    return bytes.fromhex("02420a000002" "02420a000001" "0800") + bytes(range(256))[: n - 14]


def _plain(outer, frame, port=4789, encap="vxlan"):
    src, dst = (ipaddress.ip_address(a).packed for a in outer)
    return encapsulate(encap, src, dst, 42, frame, dport=port)


def _scapy_view(packet: bytes):
    """Scapy binds ESP to UDP 4500 only: re-layer the UDP payload as ESP."""
    p = IPv6(packet) if packet[0] >> 4 == 6 else IP(packet)
    load = bytes(p[UDP].payload)
    p[UDP].remove_payload()
    return p / ESP(load)


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGO))
@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("encap", ["vxlan", "gre-udp"])
@pytest.mark.parametrize("size", [14, 64, 1400])
def test_scapy_decrypts_what_we_seal(cipher, outer, encap, size):
    plain = _plain(outer, _frame(size), 5555, encap)
    sender = ipaddress.ip_address(outer[0]).packed
    spi = make_spi(7, 0x123456)
    km = derive_keymat(cipher, os.urandom(32), spi, sender)
    seq = (3 << 32) | 0xFFFFFFF0
    enc = seal_packet(plain, cipher, km, spi, seq)
    iphl = 40 if ":" in outer[0] else 20
    p = IPv6(enc) if ":" in outer[0] else IP(enc)
    sport = struct.unpack_from("!H", plain, iphl)[0]
    assert (p[UDP].sport, p[UDP].dport) == (sport, 5555)
    if ":" in outer[0]:         # the outer UDP checksum verifies (Scapy recomputes it)
        assert p[UDP].chksum == IPv6(bytes(IPv6(enc[:40]) / UDP(enc[40:])))[UDP].chksum
    else:
        assert p[UDP].chksum == 0 and internet_checksum(enc[:20]) == 0
        assert p[IP].len == len(enc) and p[UDP].len == len(enc) - 20
    assert struct.unpack_from("!Q", enc, iphl + 8 + 8)[0] == seq     # IV = the ESN
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo=SCAPY_ALGO[cipher], crypt_key=bytes(km),
                             nat_t_header=UDP(sport=sport, dport=5555), esn_en=True, esn=seq >> 32)
    assert bytes(sa.decrypt(_scapy_view(enc))) == plain
    # no byte of the inner datagram shows through
    assert plain[iphl + 8:iphl + 24] not in enc


@pytest.mark.parametrize("cipher", sorted(SCAPY_ALGO))
@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
def test_we_open_what_scapy_encrypts(cipher, outer):
    plain = _plain(outer, _frame(200), 4789)
    iphl = 40 if ":" in outer[0] else 20
    sender = ipaddress.ip_address(outer[0]).packed
    spi = make_spi(1, 0xABCDEF)
    km = derive_keymat(cipher, os.urandom(32), spi, sender)
    sport = struct.unpack_from("!H", plain, iphl)[0]
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo=SCAPY_ALGO[cipher], crypt_key=bytes(km),
                             nat_t_header=UDP(sport=sport, dport=4789), esn_en=True, esn=0)
    w = ReplayWindow()
    for seq in (1, 2, 5, 3):
        e = bytes(sa.encrypt((IPv6 if ":" in outer[0] else IP)(plain), seq_num=seq))
        esp = e[iphl + 8:]
        full = esp_seq(esp, w)          # Scapy's IV is random: the ESN comes from the window
        assert full == seq and w.check(full)
        payload, nh = decode_esp(cipher, km, esp, full)
        w.update(full)
        assert nh == 17 and payload == plain[iphl:]
        assert not w.check(full)        # the same packet again is a replay


def test_decode_rejects_every_flipped_bit_and_truncation():
    spi, seq = make_spi(9, 1), 77
    km = derive_keymat("aes-256-gcm", bytes(range(32)), spi, bytes(4))
    esp = encode_esp("aes-256-gcm", km, spi, seq, b"\x00" * 8 + b"payload" * 5)
    assert decode_esp("aes-256-gcm", km, esp, seq)[0] == b"\x00" * 8 + b"payload" * 5
    for i in range(len(esp)):
        for bit in (0x01, 0x80):
            bad = bytearray(esp)
            bad[i] ^= bit
            s = esp_seq(bytes(bad), ReplayWindow())
            if s <= 0:
                continue        # no sequence number at all: dropped before decryption
            with pytest.raises(WireError) as ei:
                decode_esp("aes-256-gcm", km, bytes(bad), s)
            assert ei.value.reason == "esp_auth"
    for n in range(ESP_MIN_LEN):
        with pytest.raises(WireError) as ei:
            decode_esp("aes-256-gcm", km, esp[:n], seq)
        assert ei.value.reason == "esp_too_short"
    with pytest.raises(WireError) as ei:
        decode_esp("aes-256-gcm", km, esp[:-1], seq)
    assert ei.value.reason == "esp_auth"


def test_padding_aligns_to_four_bytes():
    km = bytes(36)
    for n in range(0, 12):
        esp = encode_esp("chacha20-poly1305", km, 0x10000, 1, bytes(n))
        assert (len(esp) - 16 - 16) % 4 == 0
        assert decode_esp("chacha20-poly1305", km, esp, 1) == (bytes(n), 17)


# --- the replay window --------------------------------------------------------------------

def test_window_accepts_reordering_inside_its_width_and_nothing_twice():
    w = ReplayWindow()
    order = list(range(1, 3 * REPLAY_WINDOW, 3)) + list(range(2, 3 * REPLAY_WINDOW, 3))
    seen = set()
    top = 0
    for s in order:
        ok = w.check(s)
        assert ok == (s not in seen and (s > top or top - s < REPLAY_WINDOW))
        if ok:
            w.update(s)
            seen.add(s)
            top = max(top, s)
    assert not w.check(top - REPLAY_WINDOW) and not w.check(0)


def test_window_a_whole_window_late_is_a_replay_one_less_is_not():
    w = ReplayWindow()
    w.update(REPLAY_WINDOW + 10)
    assert w.check(11) and not w.check(10)


def test_esn_inference_across_the_32_bit_boundary():
    w = ReplayWindow()
    w.update((1 << 32) - 5)
    assert w.infer(0xFFFFFFF0) == (1 << 32) - 16
    assert w.infer(3) == (1 << 32) + 3      # wrapped: the next subspace
    w.update((1 << 32) + 3)
    assert w.infer(0xFFFFFFFE) == (1 << 32) - 2     # late packet from the old subspace
    assert ReplayWindow().infer(0xFFFFFFFF) == -1   # before the first packet: invalid


def test_esn_comes_from_our_iv_after_a_receiver_restart():
    """A sender past 2**32 packets: a fresh window would guess high half 0; the IV says 5."""
    spi, seq = make_spi(2, 9), (5 << 32) + 4
    km = bytes(36)
    esp = encode_esp("aes-256-gcm", km, spi, seq, b"x" * 20)
    fresh = ReplayWindow()
    assert esp_seq(esp, fresh) == seq
    assert decode_esp("aes-256-gcm", km, esp, seq)[0] == b"x" * 20


# --- keys ---------------------------------------------------------------------------------

KEY_A = "11" * 32
KEY_B = "ab" * 32


def test_parse_keys_comments_blank_lines_and_order():
    keys = parse_keys(f"# rotated 2026-11-28\n\n3 {KEY_A}  # old\n 200 {KEY_B.upper()}\n")
    assert list(keys) == [3, 200] and keys[200] == bytearray(H(KEY_B))
    assert parse_keys(format_keys(keys)) == keys


@pytest.mark.parametrize("text,what", [
    ("", "holds no key"), ("# nothing\n", "holds no key"),
    (f"0 {KEY_A}\n", "out of range"), (f"256 {KEY_A}\n", "out of range"),
    (f"1 {KEY_A[:-2]}\n", "line 1"), (f"1 {KEY_A}00\n", "line 1"), ("1\n", "line 1"),
    (f"1 {KEY_A}\n1 {KEY_B}\n", "twice"), (f"1 {KEY_A[:-1]}g\n", "line 1"),
    (f"x {KEY_A}\n", "line 1"),
])
def test_parse_keys_rejects_with_the_line_and_without_the_key(text, what):
    with pytest.raises(KeyFileError) as ei:
        parse_keys(text, "network.blue.key_file")
    msg = str(ei.value)
    assert what in msg and "network.blue.key_file" in msg
    assert KEY_A[:16] not in msg and KEY_B[:16] not in msg


def test_key_file_mode_and_owner(tmp_path):
    p = tmp_path / "k"
    p.write_text(f"1 {KEY_A}\n")
    uid = os.getuid()
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(p, mode)
        with pytest.raises(KeyFileError, match="0600"):
            load_key_file(str(p), "network.blue.key_file", owner=uid)
    os.chmod(p, 0o600)
    assert load_key_file(str(p), owner=uid) == {1: bytearray(H(KEY_A))}
    with pytest.raises(KeyFileError, match="owned by root"):
        check_key_file_mode(os.stat(p), "key_file", owner=uid + 1)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_key_file(str(tmp_path / "missing"), owner=uid)
    (tmp_path / "link").symlink_to(p)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_key_file(str(tmp_path / "link"), owner=uid)


def test_spi_layout_keeps_plaintext_headers_at_key_id_zero():
    spi = make_spi(0xA5, 0x123456)
    assert spi == 0x12A53456 and split_spi(spi) == (0xA5, 0x123456)
    vxlan = _plain(V4, _frame())[28:36]
    gre_udp = _plain(V4, _frame(), encap="gre-udp")[28:36]
    for hdr in (vxlan, gre_udp):
        assert split_spi(struct.unpack("!I", hdr[:4])[0])[0] == 0
    with pytest.raises(ValueError):
        make_spi(0, 1)


def test_derivation_separates_senders_boots_keys_and_ciphers():
    key = bytes(range(32))
    base = derive_keymat("aes-256-gcm", key, make_spi(1, 1), H("c6120001"))
    others = [
        derive_keymat("aes-256-gcm", key, make_spi(1, 1), H("c6120002")),       # sender
        derive_keymat("aes-256-gcm", key, make_spi(1, 2), H("c6120001")),       # boot
        derive_keymat("aes-256-gcm", key, make_spi(2, 1), H("c6120001")),       # key id
        derive_keymat("chacha20-poly1305", key, make_spi(1, 1), H("c6120001")),  # cipher
        derive_keymat("aes-256-gcm", bytes(32), make_spi(1, 1), H("c6120001")),  # key
    ]
    assert len(base) == 36 and len({bytes(base)} | {bytes(o) for o in others}) == 6


def test_derivation_known_answer_is_rfc5869_hkdf_sha256():
    """Pinned so that an independent implementation can check itself against ours: the
    README's recipe with RFC 5869's HKDF-SHA256 (cryptography's HKDF here)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    key, spi, sender = bytes(range(32)), make_spi(1, 0x0A0B0C), H("c6120001")
    info = b"\x01" + struct.pack("!I", spi) + sender
    want = HKDF(algorithm=hashes.SHA256(), length=36, salt=b"vxlan-dp esp v1", info=info).derive(key)
    assert bytes(derive_keymat("aes-256-gcm", key, spi, sender)) == want


def test_keyring_order_zeroing_and_repr():
    ring = KeyRing()
    a, b = bytearray(H(KEY_A)), bytearray(H(KEY_B))
    ring.install({5: a})
    assert ring.send_id == 5 and ring.newest() == 5
    ring.install({5: a, 2: b})          # id 2 came later in the file: it is the newest
    assert ring.newest() == 2 and ring.send_id == 5
    ring.install({2: b})
    assert a == bytearray(32) and ring.send_id == 2     # removed key zeroed
    assert KEY_B[:8] not in repr(ring) and "2" in repr(ring)
