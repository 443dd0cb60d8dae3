#!/usr/bin/env python3
"""Reads an image table with pyarrow and pandas and checks the contract.

Usage: python3 tests/read_with_pyarrow.py FILE.parquet
Prints a one-line summary; exits non-zero on any mismatch.
"""
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

path = sys.argv[1]
pf = pq.ParquetFile(path)
meta = {k.decode(): v.decode() for k, v in pf.metadata.metadata.items()}
assert meta["tsimcne.kind"] == "images", meta
h, w, c = (int(meta[f"tsimcne.{k}"]) for k in ("height", "width", "channels"))
names = json.loads(meta["tsimcne.class_names"])

table = pq.read_table(path)
schema = table.schema
# The same facts reach pandas/pyarrow users through the table's schema.
assert {k.decode(): v.decode() for k, v in schema.metadata.items()} == {
    k: v for k, v in meta.items() if k.startswith("tsimcne.")}
assert schema.field("id").type == pa.uint32()
assert schema.field("label").type == pa.int32()
assert pa.types.is_dictionary(schema.field("label_name").type)
assert schema.field("image").type == pa.binary()

df = table.to_pandas()
assert (df["id"].to_numpy() == np.arange(len(df))).all()
assert set(df["split"]) <= {"train", "test"}
labelled = df["label"].notna()
assert (df.loc[labelled, "label_name"].astype(str).to_numpy()
        == np.array(names, dtype=object)[df.loc[labelled, "label"].astype(int)]).all()
first = np.frombuffer(df["image"].iloc[0], dtype=np.uint8).reshape(h, w, c)
assert all(len(b) == h * w * c for b in df["image"])
if "coarse_label" in df:
    coarse = json.loads(meta["tsimcne.coarse_class_names"])
    assert df["coarse_label"].max() < len(coarse)
print(f"{path}: {len(df)} rows, {h}x{w}x{c}, {len(names)} classes, "
      f"{pf.metadata.num_row_groups} row groups, first pixel {first[0, 0].tolist()}")
