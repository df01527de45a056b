#!/usr/bin/env bash
# README command two: install what is missing, build, and run the whole test suite (unit tests,
# the LibTorch-only smoke check, end-to-end CLI tests), then build and run the example app
# against the installed package.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh --dev
# -DMMINTENT_BUILD_TESTS=ON reconfigures a build/ the demo configured before GoogleTest was
# installed (the configure step then looks for it again and adds the tests).
# -DMMINTENT_TEST_SHARDS=2: CTest runs each test executable as 2 processes (GoogleTest shards)
# rather than one process per test: the suite takes about half the time, because most tests
# share a fixture their suite trains once. One test alone: build/bin/EXECUTABLE --gtest_filter=NAME.
bash scripts/build.sh build -DMMINTENT_BUILD_TESTS=ON -DMMINTENT_TEST_SHARDS=2
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 900 --no-tests=error
bash scripts/check_example.sh build
