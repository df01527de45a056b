#!/usr/bin/env bash
# Checks the installed CMake package the way a user outside the tree meets it: installs
# BUILD_DIR (default: build/) into a fresh temporary prefix, builds examples/app against it
# with only CMAKE_PREFIX_PATH=<prefix>, generates a tiny demo data set, runs the app (train 2
# epochs, then predict) and the installed CLI, and checks what they print. Exits non-zero on
# any failure; the work folder is removed on success and kept (and named) on failure.
#   scripts/check_example.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
start=$SECONDS

step() { printf '\n== check_example [%3d s]: %s\n' "$((SECONDS - start))" "$*"; }
fail() { printf 'check_example: FAILED: %s\n' "$*" >&2; exit 1; }

[ -f "$build/CMakeCache.txt" ] ||
  fail "'$build' is not a configured build folder (run scripts/build.sh first)"
build="$(cd "$build" && pwd)"

work="$(mktemp -d "${TMPDIR:-/tmp}/mmintent_example.XXXXXX")"
work="$(cd "$work" && pwd -P)"
trap 'rc=$?; if [ $rc -eq 0 ]; then rm -rf "$work"; else echo "check_example: work folder kept: $work" >&2; fi' EXIT
prefix="$work/prefix"
# The checks below must see only the installed package: no library path or shim override.
unset LD_LIBRARY_PATH MMINTENT_SPM_SHIM

step "building $build (nothing to do when it is up to date)"
cmake --build "$build" -j "$(nproc)"

step "installing $build into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log"; fail "cmake --install"; }
for f in include/mmintent/app/run.h include/mmintent/inference/predictor.h \
         lib/libmmintent.so lib/libmmintent_core.so lib/libmmintent_spm.so \
         bin/mmintent bin/mmintent_make_demo share/mmintent/mmintent_export.py \
         lib/cmake/mmintent/mmintentConfig.cmake lib/cmake/mmintent/mmintentConfigVersion.cmake \
         lib/cmake/mmintent/mmintentTargets.cmake; do
  [ -e "$prefix/$f" ] || fail "the install lacks $f"
  echo "  ok  $f"
done
# The exported targets must not point into the build or source tree, nor export helper targets.
if grep -n -e "$build" -e "$root" "$prefix"/lib/cmake/mmintent/*.cmake; then
  fail "the installed CMake files reference the build or source tree (lines above)"
fi
if grep -n -e "mmintent_warnings" -e "-Wall" "$prefix"/lib/cmake/mmintent/*.cmake; then
  fail "the installed CMake files export the project's warning flags (lines above)"
fi
if command -v readelf >/dev/null; then
  for f in bin/mmintent lib/libmmintent.so lib/libmmintent_core.so lib/libmmintent_spm.so; do
    rpath="$(readelf -d "$prefix/$f" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p')"
    echo "  $f: RUNPATH '${rpath}'"
    case "$rpath" in *"$build"*|*"$root"*) fail "$f has a build-tree RUNPATH: $rpath" ;; esac
  done
fi

step "generating a tiny demo data set with the installed mmintent_make_demo"
"$prefix/bin/mmintent_make_demo" --out "$work/data" \
  --train-per-intent 20 --val-per-intent 5 --test-per-intent 5 >"$work/make_demo.log" ||
  { cat "$work/make_demo.log"; fail "mmintent_make_demo"; }
tail -n 1 "$work/make_demo.log"

step "configuring and building examples/app against the prefix"
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # Paths under the (random) work folder become relative, so reruns hit the cache.
  export CCACHE_BASEDIR="$work"
fi
cmake -S "$root/examples/app" -B "$work/app-build" "${gen[@]}" "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$work/app-configure.log" ||
  { cat "$work/app-configure.log"; fail "configuring examples/app"; }
found="$(sed -n 's/^mmintent_DIR:PATH=//p' "$work/app-build/CMakeCache.txt")"
[ "$found" = "$prefix/lib/cmake/mmintent" ] ||
  fail "find_package(mmintent) found '$found', not the fresh prefix"
echo "  find_package(mmintent) -> $found"
cmake --build "$work/app-build" -j "$(nproc)"
app="$work/app-build/mmintent_example_app"

step "running mmintent_example_app DATA_DIR RUN_DIR"
# LD_DEBUG=files only logs which shared objects get loaded (it changes nothing): it tells where
# the sentencepiece shim came from.
if ! LD_DEBUG=files LD_DEBUG_OUTPUT="$work/ld" "$app" "$work/data" "$work/run" \
     >"$work/app.out" 2>"$work/app.err"; then
  cat "$work/app.out" "$work/app.err"
  fail "mmintent_example_app exited non-zero"
fi
cat "$work/app.out"
grep -q "^trained 2 epoch(s) into $work/run" "$work/app.out" || fail "no training summary"
grep -q "^  test accuracy" "$work/app.out" || fail "no test metrics"
top1="$(sed -n 's/^  top 1: \([a-z_]*\) *p=[0-9.]*$/\1/p' "$work/app.out")"
[ -n "$top1" ] || fail "no 'top 1: INTENT p=...' line"
grep -q "\"label\": \"$top1\"" "$work/data/train.jsonl" || fail "top intent '$top1' is not a label of the data"
[ "$(grep -c '^  top [0-9]: ' "$work/app.out")" -eq 3 ] || fail "expected 3 top intents"
for f in config.yaml labels.json tokenizer.model best.pt report.json; do
  [ -f "$work/run/$f" ] || fail "the run directory lacks $f"
done
shim="$(grep -ho 'file=[^ ]*libmmintent_spm\.so' "$work"/ld.* | head -n 1 | sed 's/^file=//')"
[ "$shim" = "$prefix/lib/libmmintent_spm.so" ] ||
  fail "the sentencepiece shim was loaded from '${shim:-nowhere}', not from $prefix/lib"
echo "  sentencepiece shim loaded from $shim (found next to libmmintent.so)"

step "running the installed CLI on the example's run"
"$prefix/bin/mmintent" predict "$work/run" --text "Can I send these back for a refund?" \
  --image "$work/data/images/test/00000.png" --device cpu >"$work/cli.out" 2>"$work/cli.err" ||
  { cat "$work/cli.out" "$work/cli.err"; fail "mmintent predict"; }
cat "$work/cli.out"
grep -q "_" "$work/cli.out" || fail "mmintent predict printed no intent"
# The installed CLI keeps the BLAS its build chose (cmake/MmintentBlas.cmake: BLIS by run path),
# whatever the system's libblas.so.3 is.
blas_dir="$(sed -n 's/^MMINTENT_BLAS_DIR:PATH=//p' "$build/CMakeCache.txt")"
blas="$("$prefix/bin/mmintent" --version | sed -n 's/^BLAS: //p')"
if [ -n "$blas_dir" ]; then
  [ "$(dirname "$blas")" = "$blas_dir" ] ||
    fail "the installed CLI loads the BLAS '$blas', not the one in MMINTENT_BLAS_DIR=$blas_dir"
fi
echo "  BLAS of the installed CLI: $blas"
# The installed CLI exports through the installed exporter script (share/mmintent), where
# Debian's python3-torch is there to run it.
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  "$prefix/bin/mmintent" export "$work/run" --format torchscript --out "$work/model.pt" >"$work/export.out" 2>&1 ||
    { cat "$work/export.out"; fail "mmintent export --format torchscript"; }
  cat "$work/export.out"
  grep -qx "exported by $prefix/share/mmintent/mmintent_export.py" "$work/export.out" ||
    fail "the installed CLI did not use the installed exporter script"
else
  echo "  (no /usr/bin/python3 with torch: the installed exporter is not run)"
fi

step "building examples/custom_modality against the prefix and running it"
# A modality registered from outside the library (run/plugins.h): the same data with an
# "order" vector per request; the model that reads it must beat text + image alone.
cmake -S "$root/examples/custom_modality" -B "$work/custom-build" "${gen[@]}" "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$work/custom-configure.log" ||
  { cat "$work/custom-configure.log"; fail "configuring examples/custom_modality"; }
cmake --build "$work/custom-build" -j "$(nproc)"
"$work/custom-build/mmintent_custom_modality" "$work/data" "$work/custom" \
  >"$work/custom.out" 2>"$work/custom.err" ||
  { cat "$work/custom.out" "$work/custom.err"; fail "mmintent_custom_modality exited non-zero"; }
cat "$work/custom.out"
without="$(sed -n 's/^test accuracy, text + image: *\([0-9.]*\)$/\1/p' "$work/custom.out")"
with="$(sed -n 's/^test accuracy, text + image + order: *\([0-9.]*\)$/\1/p' "$work/custom.out")"
[ -n "$without" ] && [ -n "$with" ] || fail "no accuracy lines from mmintent_custom_modality"
awk -v a="$with" -v b="$without" 'BEGIN { exit !(a > b) }' ||
  fail "the order modality did not help: $with with it, $without without"
grep -q "^request: .* -> [a-z_]* (p=" "$work/custom.out" || fail "no prediction with the order modality"
grep -q '"order"' "$work/custom/text_image_order/config.yaml" || fail "the run's config does not name the order modality"

printf '\ncheck_example: OK in %d s\n' "$((SECONDS - start))"
