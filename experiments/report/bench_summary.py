"""Turn pytest-benchmark's JSON into a table of GB/s and ratios to the copy roofline."""

from __future__ import annotations

import json
import pathlib

import pandas as pd


def summarize(json_path, csv_path) -> pd.DataFrame:
    data = json.loads(pathlib.Path(json_path).read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b["extra_info"]
        median = b["stats"]["median"]
        rows.append(
            {
                **{k: info[k] for k in ("entry", "engine", "rows", "n", "bytes")},
                "median_s": median,
                "min_s": b["stats"]["min"],
                "max_s": b["stats"]["max"],
                "rounds": b["stats"]["rounds"],
                "gbps": info["bytes"] / median / 1e9,
            }
        )
    table = pd.DataFrame(rows)
    copies = table[table.entry == "copy"].pivot_table(
        index=["rows", "n"], columns="engine", values="gbps"
    )
    table = table.join(copies.rename(columns=lambda c: f"{c} GB/s"), on=["rows", "n"])
    if "parallel copy GB/s" in table:
        table["ratio_to_parallel_copy"] = table.gbps / table["parallel copy GB/s"]
    table.to_csv(csv_path, index=False)
    return table
