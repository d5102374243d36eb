"""Read the history a real W&B offline run wrote (``<run dir>/wandb/offline-run-*/run-<id>.wandb``).

wandb 0.31 ships no reader of its own, so this reads the file as it is laid out: a 7-byte header
(``:W&B``, a 2-byte magic, a version byte), then blocks of 32 KiB holding records in the LevelDB log
format (4-byte checksum, 2-byte little-endian length, 1-byte type: 1 full, 2 first, 3 middle, 4 last
part), each record one protobuf ``wandb_internal_pb2.Record``. Tests use it to check what W&B
itself stored, not what rlrun meant to send."""
from __future__ import annotations

import glob
import json
import os
import struct

BLOCK = 32 * 1024
HEADER = 7


def records(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", path
    found, part, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if length == 0 and kind == 0:  # zero padding
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            found.append(chunk)
        elif kind == 2:
            part = chunk
        elif kind == 3:
            part += chunk
        elif kind == 4:
            found.append(part + chunk)
    return found


def history(run_dir) -> list[list[dict]]:
    """Per offline-run dir of ``run_dir`` (oldest first), the history rows W&B stored, each a dict of
    its values with ``_step``."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for path in sorted(glob.glob(os.path.join(str(run_dir), "wandb", "offline-run-*", "run-*.wandb"))):
        rows = []
        for raw in records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                rows.append({(item.key or ".".join(item.nested_key)): json.loads(item.value_json)
                             for item in record.history.item})
        runs.append(rows)
    return runs
