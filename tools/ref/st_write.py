"""A minimal safetensors writer (no dependency on the safetensors package).

Layout: u64 little-endian header length N, N bytes of JSON (padded with
spaces to a multiple of 8), then the tensors' bytes back to back in the
order given, each little-endian and C-contiguous.
"""
import json
import struct

import numpy as np

_DTYPES = {np.dtype("float32"): "F32", np.dtype("uint8"): "U8", np.dtype("int32"): "I32"}


def serialize(tensors, metadata=None):
    """tensors: list of (name, numpy array); metadata: dict of str -> str."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    # Largest elements first keeps every tensor aligned (the header is padded to 8).
    ordered = sorted(tensors, key=lambda nt: -np.asarray(nt[1]).dtype.itemsize)
    blobs, off = [], 0
    for name, arr in ordered:
        a = np.ascontiguousarray(arr)
        if a.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {a.dtype} not supported")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write(path, tensors, metadata=None):
    data = serialize(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
