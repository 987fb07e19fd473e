#!/usr/bin/env bash
# Installs the peer job queue (graphile-worker, pinned) into target/peer so that
# benches/peer/graphile.mjs can measure it side by side with handover.
# Idempotent; nothing it installs is committed. Prints the node_modules path last.
set -euo pipefail

VERSION="0.17.3"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="$repo_root/target/peer"
modules="$prefix/node_modules"
pkg_json="$modules/graphile-worker/package.json"

installed=""
if [[ -f "$pkg_json" ]]; then
  installed="$(node -p "require(process.argv[1]).version" "$pkg_json" 2>/dev/null || true)"
fi

if [[ "$installed" != "$VERSION" ]]; then
  mkdir -p "$prefix"
  echo "installing graphile-worker@$VERSION into $prefix" >&2
  npm install --prefix "$prefix" --no-audit --no-fund --save-exact \
    "graphile-worker@$VERSION" >&2
else
  echo "graphile-worker@$VERSION already installed in $prefix" >&2
fi

echo "$modules"
