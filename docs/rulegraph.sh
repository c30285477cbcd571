#!/usr/bin/env bash
# Redraw docs/rulegraph.svg, the README's picture of the pipeline (the paper's run,
# config/config.yaml), from the workflow itself: bash docs/rulegraph.sh
# Needs Snakemake and graphviz's `dot` (apt-get install graphviz). tests/test_docs.py checks that
# the picture names every rule of today's graph, so a new rule means running this again.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dot >/dev/null || { echo "docs/rulegraph.sh: graphviz's dot is not installed (apt-get install graphviz)" >&2; exit 1; }
out=docs/rulegraph.svg
# A temporary file renamed at the end: a failure leaves the committed picture as it was.
tmp=$(mktemp docs/.rulegraph.XXXXXX)
trap 'rm -f "$tmp" "$tmp.dot"' EXIT
# --rulegraph prints the graph alone on stdout (the config's warnings go to stderr).
snakemake --rulegraph --cores 1 > "$tmp.dot"
dot -Tsvg "$tmp.dot" > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
echo "wrote $out" >&2
