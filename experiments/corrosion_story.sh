#!/usr/bin/env bash
# The README's 4-D walk-through, end to end on the corrosion phantom:
# phantom -> run on the first scan -> label every scan -> sample -> quantify -> query -> graph.
# usage: bash experiments/corrosion_story.sh WORKDIR [RESULTS]   (rerun to finish a killed one)
set -euo pipefail
work=${1:?usage: corrosion_story.sh WORKDIR [RESULTS]}
results=$(realpath -m "${2:-experiments/results/corrosion}")
mkdir -p "$work" "$results"
cd "$work"

[ -f corrosion/summary.json ] || srjax phantom corrosion --family corrosion --shape 32,128,128
# A 0.2 % phase: k-means and Otsu split the matrix before they give the inclusions a
# class; a 4-component GMM keeps them (and splits the matrix in two).
srjax run corrosion/volume_t0000.ome.zarr --method gmm --classes 4 --out runs/t0 \
    --truth corrosion/truth_t0000.ome.zarr | tee "$results/run.txt"
srjax predict runs/t0 corrosion/volume_t*.ome.zarr --out labels
rm -rf picks features
srjax sample corrosion/volume_t*.ome.zarr --run runs/t0 --budget 12 --tile 64 --out picks --compare --alpha-sweep
# class 0: the dark class, pores and the crack alike (one grey level: only their shapes differ)
srjax quantify labels/volume_t*/labels.ome.zarr --class 0 --out features --graphs --min-voxels 4
{
  echo '$ srjax query features "time == 5" --top 4 --by major_axis'
  srjax query features "time == 5" --top 4 --by major_axis \
      --columns id,time,voxels,major_axis,minor_axis,touches_surface,track
  echo '$ srjax query features "track == 1"'
  srjax query features "track == 1" --columns id,time,voxels,major_axis,track
} | tee "$results/query.txt"
python - <<'PY' | tee "$results/graph.txt"
import networkx as nx
graph = nx.read_graphml("features/graphs/spatiotemporal.graphml")
kinds = [kind for _, _, kind in graph.edges(data="kind")]
print(f"{graph.number_of_nodes()} features over 6 steps; edges: "
      f"{kinds.count('next')} next, {len(kinds) - kinds.count('next')} near")
crack = max(graph.nodes, key=lambda n: (graph.nodes[n]["time"], graph.nodes[n]["major_axis"]))
path = [crack]
while preds := [u for u in graph.neighbors(path[-1])
                if graph.edges[u, path[-1]]["kind"] == "next" and graph.nodes[u]["time"] < graph.nodes[path[-1]]["time"]]:
    path.append(max(preds, key=lambda u: graph.nodes[u]["voxels"]))
print("the longest feature at the last step, back through its next edges (time: voxels, major axis):")
for n in reversed(path):
    print(f"  t{graph.nodes[n]['time']}: {graph.nodes[n]['voxels']} voxels, {graph.nodes[n]['major_axis']:.1f}")
PY
cp runs/t0/panel.png "$results/run_panel.png"
cp picks/contact_sheet.png picks/scatter.png picks/alpha.png picks/compare.md "$results/"
cp features/sizes.png features/trajectories.png features/summary.md features/events.csv "$results/"
cp corrosion/summary.json "$results/phantom_truth.json"
