"""srai's CountEmbedder and ContextualCountEmbedder on the sample city (run by bench/leaderboard.py).

Runs in the bench-only environment ``.venv/bench`` (``make bench-venv``: srai 0.10 with the CPU torch pin), never
in the backend's. Writes one ``<method>/seed0.npy`` per embedder into OUT, rows in the order of
``OUT/region_ids.json`` (the leaderboard's regions):

* ``srai_count``: CountEmbedder with its defaults (raw category counts of the POIs in each region);
* ``srai_contextual``: ContextualCountEmbedder over the polygons' adjacency (AdjacencyNeighbourhood),
  neighbourhood distance 1, its defaults otherwise (rings summed with decaying weights, not concatenated) except
  one column per category, as CountEmbedder's default (srai's contextual default counts all POIs as one column);
* ``srai_contextual_d3``: the setting quoted in issue 13: neighbourhood distance 3, vectors concatenated,
  the categories present in at least 1 % of the regions, log1p of the counts.

Usage: ``.venv/bench/bin/python bench/srai_embed.py SAMPLE_DIR OUT``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np


def main() -> int:
    sample, out = Path(sys.argv[1]), Path(sys.argv[2])
    from srai.embedders import ContextualCountEmbedder, CountEmbedder
    from srai.joiners import IntersectionJoiner
    from srai.neighbourhoods import AdjacencyNeighbourhood

    ids = json.loads((out / "region_ids.json").read_text())
    regions = gpd.read_file(sample / "sf_block_groups_crime_pop.geojson")
    regions["region_id"] = regions["GEO_ID"].astype(str)
    regions = regions.set_index("region_id")[["geometry"]].to_crs(4326)
    pois = gpd.read_file(sample / "sf_pois_osm.geojson").to_crs(4326)
    features = pois[["category", "geometry"]].copy()
    features.index = gpd.pd.Index([f"p{i}" for i in range(len(features))], name="feature_id")
    joint = IntersectionJoiner().transform(regions, features)
    neighbourhood = AdjacencyNeighbourhood(regions)

    counts = CountEmbedder().transform(regions, features, joint)
    results = {"srai_count": counts}
    results["srai_contextual"] = ContextualCountEmbedder(neighbourhood, neighbourhood_distance=1,
                                                         count_subcategories=True).transform(regions, features, joint)
    support = (counts > 0).mean(axis=0)
    common = [c for c in counts.columns if support[c] >= 0.01]
    wanted = [c.split("_", 1)[1] if c.startswith("category_") else c for c in common]
    sub = features[features["category"].isin(wanted)]
    sub_joint = joint[joint.index.get_level_values("feature_id").isin(sub.index)]
    wide = ContextualCountEmbedder(neighbourhood, neighbourhood_distance=3, concatenate_vectors=True,
                                   expected_output_features=common, count_subcategories=True).transform(
        regions, sub, sub_joint)
    results["srai_contextual_d3"] = np.log1p(wide)
    for name, frame in results.items():
        mat = frame.reindex(ids).fillna(0.0).to_numpy(dtype=float)
        (out / name).mkdir(parents=True, exist_ok=True)
        np.save(out / name / "seed0.npy", mat)
        (out / name / "seed0.json").write_text(json.dumps({"seconds": 0.0, "shape": list(mat.shape),
                                                            "columns": len(frame.columns)}))
        print(name, mat.shape)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
