"""Writes the seed inputs of the fuzz targets (fuzz/corpus/<target>/): small valid files of
every format the readers accept, so fuzzing starts from inputs that reach deep into each
parser. Run from the repository root: /usr/bin/python3 tools/make_fuzz_seeds.py
(standard library only; the checkpoint seeds reuse the tiny fixtures in tests/fixtures)."""
import gzip
import json
import os
import struct

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


# safetensors: every dtype, a scalar, an empty tensor, metadata; an empty file of tensors.
write("safetensors", "dtypes", safetensors([
    ("f32", "F32", [2, 2], struct.pack("<4f", 1, -2, 3.5, 0)),
    ("f64", "F64", [2], struct.pack("<2d", 1e-300, -7)),
    ("f16", "F16", [3], struct.pack("<3H", 0x3c00, 0x7bff, 0x8001)),
    ("bf16", "BF16", [2], struct.pack("<2H", 0x3f80, 0xff80)),
    ("i64", "I64", [2], struct.pack("<2q", -1, 2**40)),
    ("i32", "I32", [1, 2], struct.pack("<2i", 7, -9)),
    ("u8", "U8", [3], bytes([0, 128, 255])),
    ("bool", "BOOL", [2], bytes([0, 1])),
    ("scalar", "F32", [], struct.pack("<f", 2.0)),
    ("empty", "F32", [0, 4], b""),
], {"format": "pt", "note": "seed"}))
write("safetensors", "no_tensors", safetensors([]))

# config.json / preprocessor_config.json.
write("config", "vit", read("tests/fixtures/vit_tiny/config.json"))
write("config", "llama", read("tests/fixtures/llama_tiny/config.json"))
write("config", "llama_tied", read("tests/fixtures/llama_tiny_tied/config.json"))
write("config", "preprocessor", json.dumps({"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                            "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]}).encode())

# checkpoint: config.json, NUL, model.safetensors.
for name in ("vit_tiny", "llama_tiny_tied"):
    write("checkpoint", name, read(f"tests/fixtures/{name}/config.json") + b"\0" +
          read(f"tests/fixtures/{name}/model.safetensors"))

# IDX: images (N, rows, cols) and labels (N), plain and gzip.
images = struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(range(18))
labels = struct.pack(">II", 0x801, 2) + bytes([3, 9])
write("idx", "images", images)
write("idx", "labels", labels)
write("idx", "images.gz", gzip.compress(images, mtime=0))

# Token files; the first byte picks the reading (see fuzz/targets.cpp): 0 auto (.bin),
# 1 auto (.u16), 2 auto (.u32), 3 llmc, 4 u16, 5 u32.
llmc = struct.pack("<256i", 20240520, 1, 3, *([0] * 253)) + struct.pack("<3H", 1, 65535, 10000)
write("tokens", "llmc_auto", bytes([0]) + llmc)
write("tokens", "llmc", bytes([3]) + llmc)
write("tokens", "llmc.gz", bytes([0]) + gzip.compress(llmc, mtime=0))
write("tokens", "u16", bytes([4]) + struct.pack("<4H", 5, 262, 0, 65535))
write("tokens", "u32_auto", bytes([2]) + struct.pack("<3I", 7, 70000, 2**31 - 1))

# Permutation files: int32 index vectors named by site.
write("permutations", "two_sites", safetensors([
    ("model.layers.0.mlp.down_proj", "I32", [4], struct.pack("<4i", 2, 0, 3, 1)),
    ("vit.encoder.layer.0.output.dense", "I32", [8], struct.pack("<8i", 7, 6, 5, 4, 3, 2, 1, 0)),
], {"pattern": "2:4", "score": "wanda", "method": "ria"}))
print("seeds written under", CORPUS)
