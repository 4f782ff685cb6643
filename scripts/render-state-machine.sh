#!/usr/bin/env bash
# scripts/render-state-machine.sh
#
# Redraws the connection state diagram from the code. The code writes it
# (revecho::internals::diagram, from TRANSITIONS in src/connection.rs); this
# script stores what it writes and renders the picture:
#
#   1. rewrites the Mermaid block in docs/state-machine.md and
#      docs/state-machine.dot (REVECHO_BLESS=1 on the test that compares them);
#   2. renders docs/state-machine.dot to docs/state-machine.svg with Graphviz.
#
# Commit the three files together. It needs Graphviz's `dot` and fails
# without it, before changing anything.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null; then
    echo "error: Graphviz's dot is not installed; install it with" >&2
    echo "  apt-get install graphviz   (Debian, Ubuntu)" >&2
    echo "  brew install graphviz      (macOS)" >&2
    exit 1
fi

echo "== writing the Mermaid block and docs/state-machine.dot"
REVECHO_BLESS=1 cargo test --quiet --test state_machine_docs generated_text
echo "== dot -Tsvg docs/state-machine.dot -o docs/state-machine.svg ($(dot -V 2>&1))"
dot -Tsvg docs/state-machine.dot -o docs/state-machine.svg
echo "== checking"
cargo test --quiet --test state_machine_docs
