#!/usr/bin/env bash
# Lint the protobuf API and regenerate proto/gen/ from it.
# Idempotent; may be run from any directory (npm run proto).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npx --no-install buf lint
npx --no-install buf generate "$@"
