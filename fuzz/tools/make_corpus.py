#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ from real captures (fuzz/README.md, "Seeds").

  make_corpus.py SDP_JSON MEDIA_DIR

SDP_JSON: an offer, an answer and ICE candidates Chromium produced (tools/chromium_sdp.mjs).
MEDIA_DIR: files written by rtcio-media's own writers (its `files` test leaves clip.h264,
voice.opus, tone.wav and clip.y4m in its scratch dir). Everything else is rtc.io / socket.io
frames in the exact shapes PROTOCOL.md documents, wrapped around those captures.
"""
import hashlib
import json
import os
import struct
import sys
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def js(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def main(sdp_json, media):
    cap = json.load(open(sdp_json))
    offer, answer, cands, msid = cap["offer"], cap["answer"], cap["cands"], cap["msid"]
    src, dst = "Xv4fJ2mQ0aBcDeFgAAAB", "Pq8rS3tU4vWxYzAbAAAC"

    # rtc.io signaling envelopes (PROTOCOL.md §2): offers {target, source, data}, the rest
    # {source, target, data}.
    envs = [
        {"target": dst, "source": src, "data": {"description": offer}},
        {"source": src, "target": dst, "data": {"description": answer}},
        {"source": src, "target": dst, "data": {"candidate": {"candidate": "", "sdpMid": None,
                                                               "sdpMLineIndex": None}}},
        {"source": src, "target": dst, "data": {"mid": msid}},
        {"source": src, "target": dst, "data": {"mid": msid, "events": {
            "camera": [f"[RTCIOStream] {msid}", {"name": "bob", "id": "[RTCIOSelf]"}],
            "screen": [f"[RTCIOStream] {msid}"]}}},
    ] + [{"source": src, "target": dst, "data": {"candidate": c}} for c in cands[:3]]
    for e in envs:
        put("signal_envelope", js(e))
    put("signal_envelope", js({"source": src, "data": {"mid": msid,
                                                       "events": {"peer-connect": [{"id": "x"}]}}}))

    # Engine.IO / Socket.IO frames as the server sends them (PROTOCOL.md §1.2–1.3).
    frames = [
        '0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
        "2", "3", "6", "1", "41", "40/calls,",
        '40{"sid":"' + src + '","pid":"3Gi4mF2JQ9"}',
        '44{"message":"Invalid namespace"}',
        '42["join-ok",{"roomId":"r1"},"Q80uhL-"]',
        '42["#rtcio:init-offer",{"source":"' + src + '"}]',
        '42["#rtcio:peer-left",{"id":"' + src + '"}]',
        '42/calls,["user-connected",{"id":"' + src + '","name":"bob"}]',
        '4312["ack",{}]',
        '451-["bin",{"_placeholder":true,"num":0}]',
    ] + ["42" + js(["#rtcio:message", e]) for e in envs[:4]]
    for f in frames:
        put("sio_packet", f)

    # Data-channel text (§4.4–4.6): ctrl events, channel events, the channel-open handshake,
    # chat / media-state / file-transfer messages of the apps.
    for name, args in [
        ("chat", [{"text": "hello", "from": "bob"}]),
        ("media-state", [{"mic": True, "cam": False}]),
        ("#rtcio:channel-open", [513]),
        ("peer-connect", [{"id": src}]),
        ("msg", [{"name": "bob", "text": "hi 👋", "at": 1733500000000}]),
        ("meta", [{"tid": "18c3-5f2e-1", "name": "report.pdf", "size": 123456, "mime": "application/pdf"}]),
        ("eof", [{"tid": "18c3-5f2e-1", "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]),
        ("cancel", [{"tid": "18c3-5f2e-1", "reason": "cancelled"}]),
        ("open", []),
    ]:
        put("ctrl_channel", js({"e": name, "d": args}))
    put("ctrl_channel", '{"e":"x","d":{"not":"an array"}}')
    put("ctrl_channel", "null")

    # Stream metadata: announced events and the arguments we resolve.
    put("stream_meta", js({"camera": [f"[RTCIOStream] {msid}", {"id": "[RTCIOSelf]"}],
                           "track-added": [1], "#rtcio:x": [], "screen": "bare"}))
    put("stream_meta", js([f"[RTCIOStream] {msid}", {"owner": "[RTCIOSelf]", "n": [1, 2.5]}]))

    # SDP: the offer, the answer, and offer → answer as two descriptions of one peer.
    put("sdp", offer["sdp"])
    put("sdp", answer["sdp"])
    put("sdp", offer["sdp"].encode() + b"\xff" + answer["sdp"].encode())

    # Negotiation: politeness byte, then (op, state) pairs.
    for seq in [b"\x01\x00\x00\x01\x01", b"\x00\x02\x00\x03\x00\x00\x01\x04\x01", b"\x00\x00\x01\x04\x01\x05\x00"]:
        put("negotiation", seq)

    # Server: socket.io event arrays as clients send them.
    for ev in [
        ["join-room", {"roomId": "r1", "name": "bob", "password": " s3cret "}],
        ["check-room", {"roomId": "r1"}],
        ["#rtcio:message", envs[0]],
        ["chat-message", {"roomId": "r1", "name": "bob", "text": "hi"}],
        ["media-state", {"roomId": "r1", "mic": True, "cam": False}],
        ["leave-room", {"roomId": "r1"}],
    ]:
        put("server_inbound", js(ev))

    # App: origin byte (0 server, 1 local, 2 peer) + the first argument.
    for origin, arg in [
        (0, {"id": src, "name": "bob"}), (0, {"roomId": "r1"}), (0, {"reason": "wrong-password", "roomId": "r1"}),
        (0, {"id": src, "mic": True, "cam": False, "roomId": "room"}), (2, {"mic": False, "cam": True}),
        (2, {"name": "bob", "text": "hi", "at": 1733500000000}), (2, "bare text"),
        (0, {"roomId": "room", "message": "hi", "user": "amy"}), (1, {"id": src}),
    ]:
        put("app_inbound", bytes([origin]) + js(arg).encode())

    # File transfer (the tutorial's per-peer `file` channel, PROTOCOL.md §8): meta, chunks, eof.
    tid = "18c3-5f2e-1"
    for seq in [
        [{"e": "meta", "d": {"tid": tid, "name": "report.pdf", "size": 20000, "mime": "application/pdf"}},
         {"e": "chunk", "d": 16384}, {"e": "chunk", "d": 3616},
         {"e": "eof", "d": {"tid": tid, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}],
        [{"e": "chunk", "d": 10}, {"e": "meta", "d": {"name": "../../etc/passwd", "size": 1e3}},
         {"e": "chunk", "d": 2000}, {"e": "eof", "d": {}}],
        [{"e": "meta", "d": {"tid": 1733500000000, "name": "CON.txt", "size": 5}}, {"e": "cancel", "d": {"tid": 1733500000000, "reason": "no"}},
         {"e": "meta", "d": {"tid": "b", "name": " .hidden ", "size": 1}}, {"e": "local", "d": "ui2"}, {"e": "closed"}],
    ]:
        put("app_transfer", js(seq))

    # Media files written by rtcio-media itself.
    h264 = open(os.path.join(media, "clip.h264"), "rb").read()
    # (the whole 33 KB clip made every execution slow; its first NAL units carry the same)
    nals = split_annexb(h264)
    put("file_h264", b"".join(b"\x00\x00\x00\x01" + n for n in nals[:5]))
    opus = open(os.path.join(media, "voice.opus"), "rb").read()
    put("file_ogg_opus", opus)
    put("file_wav", open(os.path.join(media, "tone.wav"), "rb").read()[:6000])
    for rate, ch, width in [(8000, 1, 1), (44100, 2, 2), (48000, 1, 3)]:
        put("file_wav", make_wav(rate, ch, width))
    # Y4M as Y4mWriter writes it, at 16x16 so the fuzzer stays fast (+ one real 320x180 header).
    put("file_y4m", b"YUV4MPEG2 W16 H16 F25:1 Ip A1:1 C420jpeg\n" + (b"FRAME\n" + bytes(range(256)) + bytes(128)) * 2)
    put("file_y4m", b"YUV4MPEG2 W4 H2 F30000:1001 It A0:0 C420mpeg2 XYSCSS=420MPEG2\nFRAME\n" + bytes(12))
    y4m = open(os.path.join(media, "clip.y4m"), "rb").read()
    put("file_y4m", y4m[: y4m.index(b"\n") + 1] + b"FRAME\n")

    # RTP: the H.264 clip packetized as browsers do (STAP-A for SPS+PPS, FU-A above the MTU)
    # and the Ogg file's Opus packets, in the target's record format.
    put("rtp_assembler", rtp_h264(nals[:6], mtu=200))
    put("rtp_assembler", rtp_h264(nals[:3], mtu=60, reorder=True))
    put("rtp_assembler", b"\x01" + b"".join(rtp_record(i, 1, 1, p) for i, p in enumerate(ogg_packets(opus)[2:20])))


def split_annexb(data):
    out, i, starts = [], 0, []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        out.append(data[s:e].rstrip(b"\x00"))
    return out


def rtp_record(seq, ts_delta, marker, payload):
    payload = payload[:255]
    return struct.pack(">HBBB", seq & 0xFFFF, ts_delta, (2 << 1) | marker, len(payload)) + payload


def rtp_h264(nals, mtu, reorder=False):
    recs, seq = [], 40000
    params = [n for n in nals if n[0] & 0x1F in (7, 8)]
    pics = [n for n in nals if n[0] & 0x1F not in (7, 8)]
    if params:
        stap = bytes([0x78]) + b"".join(struct.pack(">H", len(n)) + n for n in params)
        recs.append(rtp_record(seq, 0, 0, stap)); seq += 1
    for p in pics:
        if len(p) <= mtu:
            recs.append(rtp_record(seq, 1, 1, p)); seq += 1
            continue
        hdr, body = p[0], p[1:]
        chunks = [body[i:i + mtu] for i in range(0, len(body), mtu)][:40]
        for k, c in enumerate(chunks):
            fu = (hdr & 0x1F) | (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
            last = k == len(chunks) - 1
            recs.append(rtp_record(seq, 1 if k == 0 else 0, int(last), bytes([(hdr & 0xE0) | 28, fu]) + c)); seq += 1
    if reorder and len(recs) > 3:
        recs[1], recs[2] = recs[2], recs[1]
    return b"\x00" + b"".join(recs)


def ogg_packets(data):
    packets, cur, i = [], b"", 0
    while data[i:i + 4] == b"OggS":
        nseg = data[i + 26]
        segs = data[i + 27:i + 27 + nseg]
        j = i + 27 + nseg
        for s in segs:
            cur += data[j:j + s]; j += s
            if s < 255:
                packets.append(cur); cur = b""
        i = j
    return packets


def make_wav(rate, channels, width):
    import io
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels); w.setsampwidth(width); w.setframerate(rate)
        w.writeframes(bytes((i * 37) & 0xFF for i in range(64 * channels * width)))
    return buf.getvalue()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
