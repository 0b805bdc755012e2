"""Round trips and every error code of the wire protocol (docs/protocol.md)."""
import json
import struct

import pytest

from streamgen_client import protocol as p
from streamgen_client.protocol import ErrorCode, ProtocolError

MODEL = p.ModelInfo(name="tiny", fps=8.0, width=64, height=48, frames_per_block=4, sample_rate=16000,
                    channels=1, keys=["KeyW", "KeyA", "Space"], takes_mouse=True, takes_prompt=True)

CLIENT = [
    p.Start(seq=1, model="tiny", seed=7, prompt="a cat", options={"steps": 2, "cfg": 1.5, "x": None}),
    p.Start(seq=1, model="tiny"),
    p.KeyAction(seq=2, key="KeyW", down=True, t_ms=1732752000123.5),
    p.KeyAction(seq=3, key="ArrowUp", down=False),
    p.MouseAction(seq=4, dx=-4096, dy=3.25, t_ms=10),
    p.Prompt(seq=5, prompt="ünïcödé ✓ " * 10),
    p.Pause(seq=6), p.Resume(seq=7), p.Ping(seq=8, t_ms=5.0), p.Stop(seq=2**53 - 1),
]
SERVER = [
    p.Started(seq=0, session_id="s-1", model=MODEL, reply_to=1),
    p.Started(seq=0, session_id="abc_DEF", model=p.ModelInfo(name="video-only", fps=16, width=8, height=8)),
    p.Telemetry(seq=1, block_index=3, frames=4, timings_ms={"step": 41.5, "decode": 0}, queue_depth=2,
                dropped_frames=5, applied_seq=2),
    p.Telemetry(seq=2, block_index=0),
    p.Pong(seq=3, reply_to=8, t_ms=5.0, server_ms=1.7e12),
    p.Error(seq=4, code="busy", message="full", reply_to=1, retry_after_s=2.5),
    p.Error(seq=5, code="internal"),
    p.Bye(seq=6, reason="idle"),
]


@pytest.mark.parametrize("msg", CLIENT, ids=lambda m: m.TYPE)
def test_client_round_trip(msg):
    text = msg.to_json()
    assert json.loads(text)["type"] == msg.TYPE
    assert p.parse_client_message(text) == msg
    assert p.parse_client_message(text.encode()) == msg


@pytest.mark.parametrize("msg", SERVER, ids=lambda m: m.TYPE)
def test_server_round_trip(msg):
    back = p.parse_server_message(msg.to_json())
    assert back == msg
    assert back.to_json() == msg.to_json()


def test_directions_are_separate():
    with pytest.raises(ProtocolError) as e:
        p.parse_server_message(p.Ping(seq=1).to_json())
    assert e.value.code is ErrorCode.UNKNOWN_TYPE
    with pytest.raises(ProtocolError) as e:
        p.parse_client_message(p.Bye(seq=1).to_json())
    assert e.value.code is ErrorCode.UNKNOWN_TYPE


def _code(text, parse=p.parse_client_message):
    with pytest.raises(ProtocolError) as e:
        parse(text)
    return e.value


BAD = [
    # bad_json
    ("{", ErrorCode.BAD_JSON, None),
    (b"\xff\xfe{}", ErrorCode.BAD_JSON, None),
    ("[1, 2]", ErrorCode.BAD_JSON, None),
    ('"ping"', ErrorCode.BAD_JSON, None),
    ('{"type":"ping","seq":1,"seq":2}', ErrorCode.BAD_JSON, None),
    ('{"type":"ping","seq":1,"t_ms":NaN}', ErrorCode.BAD_JSON, None),
    ('{"type":"ping","seq":1,"t_ms":Infinity}', ErrorCode.BAD_JSON, None),
    ("[" * 100000 + "]" * 100000, ErrorCode.TOO_LARGE, None),
    ("[" * 5000 + "]" * 5000, ErrorCode.BAD_JSON, None),
    # unknown_type
    ('{"type":"explode","seq":3}', ErrorCode.UNKNOWN_TYPE, 3),
    ('{"type":"started","seq":3}', ErrorCode.UNKNOWN_TYPE, 3),
    # bad_field: type / seq
    ('{"seq":3}', ErrorCode.BAD_FIELD, 3),
    ('{"type":7,"seq":3}', ErrorCode.BAD_FIELD, 3),
    ('{"type":"ping"}', ErrorCode.BAD_FIELD, None),
    ('{"type":"ping","seq":"1"}', ErrorCode.BAD_FIELD, None),
    ('{"type":"ping","seq":1.0}', ErrorCode.BAD_FIELD, None),
    ('{"type":"ping","seq":true}', ErrorCode.BAD_FIELD, None),
    # bad_field: missing / extra / wrong type
    ('{"type":"start","seq":1}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"tiny","evil":1}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"../etc/passwd"}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"tiny","seed":"0"}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"tiny","options":[]}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"tiny","options":{"a":{"b":1}}}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"start","seq":1,"model":"tiny","options":{"a b":1}}', ErrorCode.BAD_FIELD, 1),
    ('{"type":"action","seq":2,"key":"KeyW","down":true}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"joystick"}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"key","key":"KeyW","down":1}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"key","key":"Key W","down":true}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"key","down":true}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"key","key":"KeyW","down":true,"dx":1}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"mouse","dx":"1","dy":0}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"action","seq":2,"kind":"mouse","dx":true,"dy":0}', ErrorCode.BAD_FIELD, 2),
    ('{"type":"prompt","seq":4,"prompt":null}', ErrorCode.BAD_FIELD, 4),
    ('{"type":"pause","seq":4,"now":true}', ErrorCode.BAD_FIELD, 4),
    # out_of_range
    ('{"type":"ping","seq":-1}', ErrorCode.OUT_OF_RANGE, None),
    ('{"type":"ping","seq":9007199254740992}', ErrorCode.OUT_OF_RANGE, None),
    ('{"type":"ping","seq":1,"t_ms":-5}', ErrorCode.OUT_OF_RANGE, 1),
    ('{"type":"start","seq":1,"model":"tiny","seed":-1}', ErrorCode.OUT_OF_RANGE, 1),
    ('{"type":"start","seq":1,"model":"tiny","version":2}', ErrorCode.OUT_OF_RANGE, 1),
    ('{"type":"start","seq":1,"model":"' + "m" * 65 + '"}', ErrorCode.OUT_OF_RANGE, 1),
    ('{"type":"action","seq":2,"kind":"mouse","dx":4096.5,"dy":0}', ErrorCode.OUT_OF_RANGE, 2),
    ('{"type":"action","seq":2,"kind":"mouse","dx":0,"dy":-1e300}', ErrorCode.OUT_OF_RANGE, 2),
    ('{"type":"action","seq":2,"kind":"key","key":"' + "K" * 33 + '","down":true}', ErrorCode.OUT_OF_RANGE, 2),
    ('{"type":"prompt","seq":4,"prompt":"' + "x" * 2001 + '"}', ErrorCode.OUT_OF_RANGE, 4),
    ('{"type":"start","seq":1,"model":"tiny","options":{' + ",".join(f'"k{i}":{i}' for i in range(33)) + "}}",
     ErrorCode.OUT_OF_RANGE, 1),
    # too_large
    ('{"type":"prompt","seq":4,"prompt":"' + "x" * 20000 + '"}', ErrorCode.TOO_LARGE, None),
]


@pytest.mark.parametrize("text,code,seq", BAD, ids=[f"{c.value}-{i}" for i, (_, c, _s) in enumerate(BAD)])
def test_malformed_client_input(text, code, seq):
    err = _code(text)
    assert err.code is code, err
    assert err.seq == seq
    answer = p.Error.answering(err, seq=99)  # what the server sends back, itself a valid message
    back = p.parse_server_message(answer.to_json())
    assert back.code == code.value and back.reply_to == seq and back.seq == 99


def test_every_json_error_code_is_reachable_by_parse():
    seen = {c for _, c, _ in BAD}
    assert seen == {ErrorCode.BAD_JSON, ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_FIELD,
                    ErrorCode.OUT_OF_RANGE, ErrorCode.TOO_LARGE}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_a_valid_error_message(code):
    retry = 3.0 if code in (ErrorCode.BUSY, ErrorCode.RATE_LIMITED) else None
    msg = p.Error(seq=1, code=code.value, message=f"{code.value} happened", reply_to=5, retry_after_s=retry)
    assert p.parse_server_message(msg.to_json()) == msg


def test_server_message_validation():
    assert _code('{"type":"error","seq":1,"code":"busy","message":"x"}', p.parse_server_message).code \
        is ErrorCode.BAD_FIELD  # busy needs retry_after_s
    assert _code('{"type":"error","seq":1,"code":"nope"}', p.parse_server_message).code is ErrorCode.OUT_OF_RANGE
    started = json.loads(SERVER[0].to_json())
    started["model"]["fps"] = 0
    assert _code(json.dumps(started), p.parse_server_message).code is ErrorCode.OUT_OF_RANGE
    started["model"] = "tiny"
    assert _code(json.dumps(started), p.parse_server_message).code is ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError):  # audio rate without channels is inconsistent
        p.ModelInfo(name="m", fps=8, width=8, height=8, sample_rate=16000, channels=0)


def test_invalid_messages_cannot_be_built():
    with pytest.raises(ProtocolError) as e:
        p.KeyAction(seq=1, key="KeyW", down="yes")
    assert e.value.code is ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError) as e:
        p.MouseAction(seq=1, dx=float("nan"), dy=0)
    assert e.value.code is ErrorCode.BAD_FIELD


def test_seq_checker():
    c = p.SeqChecker()
    c.check(1)
    c.check(5)
    with pytest.raises(ProtocolError) as e:
        c.check(5)
    assert e.value.code is ErrorCode.OUT_OF_RANGE and e.value.seq == 5


def test_offer_round_trip_and_errors():
    o = p.Offer(sdp="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", model="tiny", seed=3, prompt="hi")
    d = json.loads(o.to_json())
    assert d["type"] == "offer" and "type_" not in d
    assert p.parse_offer(o.to_json()) == o and p.parse_offer(d) == o
    for body, code in [({"sdp": "x", "model": "tiny"}, ErrorCode.BAD_FIELD),
                       ({"sdp": "x", "type": "answer", "model": "tiny"}, ErrorCode.BAD_FIELD),
                       ({"sdp": 1, "type": "offer", "model": "tiny"}, ErrorCode.BAD_FIELD),
                       ({"sdp": "x", "type": "offer", "model": "tiny", "seed": -2}, ErrorCode.OUT_OF_RANGE),
                       ({"sdp": "x" * 70000, "type": "offer", "model": "tiny"}, ErrorCode.OUT_OF_RANGE)]:
        with pytest.raises(ProtocolError) as e:
            p.parse_offer(body)
        assert e.value.code is code, body
    assert _code("[]", p.parse_offer).code is ErrorCode.BAD_JSON


# ----------------------------------------------------------------------------- binary header
def test_media_header_layout_byte_by_byte():
    h = p.MediaHeader(kind=p.MediaKind.AUDIO_S16, block_index=0x01020304, frame_index=7,
                      timestamp_us=1_250_000, channels=2, sample_rate=48000)
    data = p.pack_media(h, b"\x01\x00\x02\x00")
    assert p.HEADER_SIZE == 32 and len(data) == 36
    assert data[0:4] == b"SGMB" and data[4] == 1 and data[5] == 2 and data[6] == 2 and data[7] == 0
    assert data[8:12] == bytes([4, 3, 2, 1])  # little-endian u32
    assert struct.unpack("<I", data[12:16])[0] == 7
    assert struct.unpack("<q", data[16:24])[0] == 1_250_000
    assert struct.unpack("<I", data[24:28])[0] == 48000
    assert struct.unpack("<I", data[28:32])[0] == 4
    back, payload = p.unpack_media(data)
    assert bytes(payload) == b"\x01\x00\x02\x00"
    assert back == p.MediaHeader(kind=p.MediaKind.AUDIO_S16, block_index=0x01020304, frame_index=7,
                                 timestamp_us=1_250_000, channels=2, sample_rate=48000, payload_length=4)


@pytest.mark.parametrize("kind", list(p.MediaKind))
def test_media_round_trip(kind):
    audio = kind is not p.MediaKind.VIDEO_JPEG
    h = p.MediaHeader(kind=kind, block_index=3, frame_index=1, timestamp_us=2**40,
                      channels=1 if audio else 0, sample_rate=16000 if audio else 0)
    payload = bytes(range(256)) * 10
    back, view = p.unpack_media(bytearray(p.pack_media(h, payload)))
    assert back.kind is kind and back.timestamp_us == 2**40 and bytes(view) == payload


def test_media_errors():
    good = p.pack_media(p.MediaHeader(kind=p.MediaKind.VIDEO_JPEG, block_index=0, frame_index=0,
                                      timestamp_us=0), b"jpeg")
    cases = [
        (good[:31], ErrorCode.BAD_FIELD),  # shorter than a header
        (b"XXXX" + good[4:], ErrorCode.BAD_FIELD),  # magic
        (good[:4] + b"\x02" + good[5:], ErrorCode.OUT_OF_RANGE),  # version
        (good[:5] + b"\x09" + good[6:], ErrorCode.OUT_OF_RANGE),  # kind
        (good + b"!", ErrorCode.BAD_FIELD),  # length mismatch
        (good[:28] + struct.pack("<I", 2**31) + b"jpeg", ErrorCode.TOO_LARGE),
        (bytes(range(200)), ErrorCode.BAD_FIELD),  # garbage
    ]
    for data, code in cases:
        with pytest.raises(ProtocolError) as e:
            p.unpack_media(data)
        assert e.value.code is code, data[:40]
    with pytest.raises(ProtocolError) as e:  # audio without its format
        p.pack_media(p.MediaHeader(kind=p.MediaKind.AUDIO_F32, block_index=0, frame_index=0, timestamp_us=0), b"")
    assert e.value.code is ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError) as e:
        p.pack_media(p.MediaHeader(kind=p.MediaKind.VIDEO_JPEG, block_index=-1, frame_index=0, timestamp_us=0), b"")
    assert e.value.code is ErrorCode.OUT_OF_RANGE
    with pytest.raises(ProtocolError) as e:
        p.pack_media(p.MediaHeader(kind=p.MediaKind.VIDEO_JPEG, block_index=0, frame_index=0, timestamp_us=0),
                     b"\0" * (p.MAX_MEDIA_PAYLOAD + 1))
    assert e.value.code is ErrorCode.TOO_LARGE


def test_protocol_module_is_light():
    import subprocess
    import sys
    code = ("import sys, streamgen_client.protocol, streamgen_client.binary; "
            "bad = [m for m in ('torch', 'numpy', 'pydantic', 'streamgen') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
