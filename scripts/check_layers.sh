#!/usr/bin/env bash
# The layer check (docs/ARCHITECTURE.md, "Rules"): every header and source under include/mmintent
# and src/ may include mmintent headers of its own folder and of lower layers only; folders on
# the same layer do not include each other. Prints each offending include as FILE:LINE and
# exits 1 when there is one.
#   scripts/check_layers.sh [ROOT]
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# The layers, bottom to top (docs/ARCHITECTURE.md). error.h, at the top of include/mmintent,
# belongs to core.
declare -A layer=(
  [core]=0
  [data]=1 [models]=1 [distributed]=1 [metrics]=1
  [policy]=2
  [training]=3
  [evaluation]=4
  [config]=5
  [run]=6
  [inference]=7
  [serve]=8
  [app]=9
  [cli]=10
)

folder_of() {  # include/mmintent/<folder>/..., src/<folder>/... or a bare error.h
  case "$1" in
    include/mmintent/*/*) local r="${1#include/mmintent/}"; echo "${r%%/*}" ;;
    include/mmintent/*) echo core ;;
    src/*/*) local r="${1#src/}"; echo "${r%%/*}" ;;
    *) echo "" ;;
  esac
}

bad=0
checked=0
cd "$root"
while IFS= read -r file; do
  from="$(folder_of "$file")"
  [ -n "${layer[$from]+x}" ] || continue  # not a layered folder (the sentencepiece shim)
  checked=$((checked + 1))
  while IFS=: read -r line target; do
    case "$target" in
      */*) to="${target%%/*}" ;;
      *) to=core ;;  # mmintent/error.h
    esac
    if [ -z "${layer[$to]+x}" ]; then
      echo "$file:$line: includes mmintent/$target, which is in no layer" >&2
      bad=$((bad + 1))
    elif [ "$to" != "$from" ] && [ "${layer[$to]}" -ge "${layer[$from]}" ]; then
      echo "$file:$line: $from (layer ${layer[$from]}) includes mmintent/$target ($to, layer ${layer[$to]})" >&2
      bad=$((bad + 1))
    fi
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]mmintent/' "$file" |
           sed -E 's/^([0-9]+):.*mmintent\/([^">]+)[">].*/\1:\2/')
done < <(find include/mmintent src -type f \( -name '*.h' -o -name '*.cpp' \) | sort)

if ((bad)); then
  echo "check_layers: $bad include(s) against the layer order in $checked files (docs/ARCHITECTURE.md)" >&2
  exit 1
fi
echo "check_layers: $checked files, every include goes down the layers"
