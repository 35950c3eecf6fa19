"""Writes a safetensors file from NumPy arrays (F64 / F32 / I64), by hand: a JSON header
and the raw little-endian bytes. Shared by the fixture and benchmark scripts so none of
them needs the safetensors package, and so the C++ reader is checked against an
independent writer."""
import json
import struct

import numpy as np

_DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def save(path, arrays, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, a in arrays.items():
        a = np.array(a, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
