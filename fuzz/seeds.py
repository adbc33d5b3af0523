#!/usr/bin/env python3
"""Writes the seed files of fuzz/corpus/ (fuzz/README.md). Run from the repository root:
`python3 fuzz/seeds.py`. Files found by fuzzing (crashes made regression inputs) are
added by hand under names starting with `regress-` and are never rewritten here."""

import base64
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "domain", "tests", "fixtures")


def fixture(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def uri(mime, data):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


PNG, JPEG, WEBP = fixture("tiny.png"), fixture("tiny.jpg"), fixture("tiny.webp")
BOMB = png_declaring(50000, 50000)

# ---- data_uri: text given as an image field -----------------------------------
seeds = {
    "png": uri("image/png", PNG),
    "jpeg": uri("image/jpeg", JPEG),
    "jpg-alias": uri("image/jpg", JPEG),
    "webp": uri("image/webp", WEBP),
    "upper-header": uri("IMAGE/PNG", PNG).replace("data:", "DATA:").replace(";base64", ";BASE64"),
    "mime-wrapped": "data:image/jpeg;base64," + "\r\n".join(
        base64.b64encode(JPEG).decode()[i:i + 76] for i in range(0, len(base64.b64encode(JPEG)), 76)),
    "param-name": uri("image/png;name=front.png", PNG),
    "url-safe": uri("image/jpeg", JPEG).replace("+", "-").replace("/", "_"),
    "no-padding": uri("image/png", PNG).rstrip("="),
    "gif": uri("image/gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
    "declared-mismatch": uri("image/png", JPEG),
    "empty-data": "data:image/png;base64,",
    "no-comma": "data:image/png;base64",
    "not-base64": "data:image/png," + PNG.decode("latin-1"),
    "bomb-50000": uri("image/png", BOMB),
    "truncated-png": uri("image/png", PNG[:40]),
    "non-canonical-last": "data:image/png;base64,iVBORw0KGgp=",
    "url-public": "https://cdn.example.com/garment.jpg?sig=abc#frag",
    "url-metadata": "http://169.254.169.254/latest/meta-data/",
    "url-mapped-v6": "http://[::ffff:169.254.169.254]/x.png",
    "url-credentials": "https://user:pw@cdn.example.com/a.png",
    "url-long": "https://cdn.example.com/" + "a" * 3000,
    "unicode": "data:image/пнг;base64,食べ物",
    "whitespace": "  \t\n ",
}
for name, text in seeds.items():
    write("data_uri", name, text)

# ---- image_header: bytes whose header is sniffed -------------------------------
heads = {
    "png": PNG,
    "jpeg": JPEG,
    "webp": WEBP,
    "photo-head": fixture("person_front.jpg")[:2048],
    "png-bomb-50000": BOMB,
    "png-zero-size": png_declaring(0, 0),
    "png-max-size": png_declaring(0xFFFFFFFF, 0xFFFFFFFF),
    "png-ihdr-cut": BOMB[:20],
    "jpeg-sof-zero": bytes([0xFF, 0xD8, 0xFF, 0xC0, 0, 0x11, 8, 0, 0, 0, 0, 3]) + bytes(12) + b"\xff\xd9",
    "jpeg-marker-run": bytes([0xFF, 0xD8]) + b"\xff" * 300,
    "jpeg-zero-length-segment": bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0xFF, 0xE0, 0, 0]),
    "webp-vp8x-max": b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + b"\xff" * 6,
    "webp-vp8l-cut": b"RIFF\x10\x00\x00\x00WEBPVP8L\x05\x00\x00\x00\x2f",
    "riff-wave": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "gif": b"GIF89a\x10\x00\x10\x00\x00\x00\x00;",
    "bmp": b"BM" + bytes(12) + struct.pack("<IiiHH", 40, 70000, -70000, 1, 24),
    "empty": b"",
    "one-byte": b"\x89",
}
for name, data in heads.items():
    write("image_header", name, data)

# ---- request_body: a Content-Type line (`-` = none), then the body --------------
default = {"user_id": "u1", "user_image": uri("image/png", PNG),
           "body_profile": {"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30}}
bodies = {
    "default": ("application/json", json.dumps(default)),
    "edit": ("application/json", json.dumps({"user_id": "u1", "base_model_task_id": "task_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                             "edit_instructions": "shorter hair"})),
    "outfit-one-string": ("application/json", json.dumps({"user_id": "u1", "base_model_task_id": "t", "angle": "SIDE",
                                                          "outfit_images": uri("image/webp", WEBP)})),
    "form-type": ("application/x-www-form-urlencoded", json.dumps(default)),
    "no-type": ("-", json.dumps(default)),
    "gbk-charset": ("application/json; charset=GBK", b'{"user_id": "\xd5\xc5\xc8\xfd"}'),
    "gbk-undeclared": ("application/json", b'{"user_id": "\xd5\xc5\xc8\xfd"}'),
    "bom": ("application/json", b"\xef\xbb\xbf" + json.dumps(default).encode()),
    "utf16": ("application/json; charset=utf-16", json.dumps(default).encode("utf-16")),
    "age-fraction": ("application/json", json.dumps({**default, "body_profile": {"age": 28.5}})),
    "age-string": ("application/json", json.dumps({**default, "body_profile": {"age": "28.0", "height": "165"}})),
    "huge-number": ("application/json", '{"user_id": "u", "body_profile": {"height_cm": 1e400}}'),
    "deep-nesting": ("application/json", '{"user_id": ' + "[" * 5000 + "]" * 5000 + "}"),
    "duplicate-keys": ("application/json", '{"user_id": "a", "user_id": "b"}'),
    "trailing-data": ("application/json", json.dumps(default) + " {}"),
    "empty": ("application/json", ""),
    "array": ("application/json", "[1, 2]"),
    "nul-in-id": ("application/json", json.dumps({**default, "user_id": "a\u0000b"})),
    "operator-object": ("application/json", '{"user_id": {"$gt": ""}, "body_profile": []}'),
    "bool-measure": ("application/json", json.dumps({**default, "body_profile": {"weight_kg": True}})),
    "bomb-image": ("application/json", json.dumps({**default, "user_image": uri("image/png", BOMB)})),
    "cut-json": ("application/json", json.dumps(default)[:57]),
    "charset-quoted": ('application/json; charset="UTF-8"', json.dumps(default)),
    "type-garbage": ("application/json\x7f;;=;charset", "{}"),
}
for name, (ct, body) in bodies.items():
    if isinstance(body, str):
        body = body.encode("utf-8")
    write("request_body", name, ct.encode("latin-1") + b"\n" + body)

# ---- apimart_response: 2xx bodies from upstream ------------------------------
answers = {
    "submit-array": {"code": 200, "data": [{"status": "submitted", "task_id": "task_01K8"}]},
    "submit-object": {"code": 200, "data": {"id": "task_01K8", "status": "submitted", "created": 1,
                                            "task_info": {"estimated_time": "30"}}},
    "status-completed": {"code": 200, "data": {"id": "task_01K8", "status": "completed", "progress": 100,
                                                "result": {"images": [{"url": ["https://cdn.example.com/a.png"],
                                                                       "expires_at": 1767225600}]},
                                                "cost": "0.04"}},
    "status-failed": {"code": 200, "data": {"status": "failed", "error": {"code": "content_policy",
                                                                          "message": "refused", "type": "x"}}},
    "status-progress-string": {"code": "200", "data": {"status": "processing", "progress": "150.7"}},
    "status-url-string": {"code": 200, "data": {"status": "completed", "result": {"images": ["  ", " https://x/y.png "]}}},
    "code-error": {"code": 500, "message": "upstream busy"},
    "data-null-with-id": {"code": 200, "data": None, "task_id": "task_01K8", "status": "processing"},
    "balance": {"success": True, "remain_balance": 12.5, "used_balance": "1e400", "unlimited_quota": "true"},
    "balance-wrapped": {"code": 200, "data": {"remain_credits": 3, "unlimited_quota": 1}},
    "balance-refused": {"success": False, "message": "invalid key"},
    "numbers-huge": {"code": 1e300, "data": {"status": "completed", "created": -1e300, "progress": -1e308,
                                              "estimated_time": 1e300, "actual_time": -5}},
}
for name, body in answers.items():
    write("apimart_response", name, json.dumps(body))
write("apimart_response", "html-502", "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body></html>")
write("apimart_response", "empty", "")
write("apimart_response", "cut-json", json.dumps(answers["status-completed"])[:40])
write("apimart_response", "deep-nesting", '{"data": ' + "[" * 5000 + "]" * 5000 + "}")
write("apimart_response", "not-utf8", b'{"code": 200, "data": {"id": "\xff\xfe", "status": "completed"}}')
