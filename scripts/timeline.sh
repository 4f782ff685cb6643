#!/bin/sh
# scripts/timeline.sh [OUTPUT]
#
# Redraws docs/timeline.svg (or OUTPUT): runs examples/timeline.rs, which
# embeds a revecho server with an observer, runs a slow reader, an oversize
# client, a trickling client and a fast client against it in-process, and
# draws one lane per connection from the events it observed. Release mode,
# so the picture shows the loop's own speed rather than debug assertions.
# Each run differs a little (timing, kernel buffer sizes); commit the result.
set -eu
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example timeline -- "${1:-docs/timeline.svg}"
