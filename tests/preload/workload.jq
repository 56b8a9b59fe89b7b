# SPDX-License-Identifier: MIT
# A jq program for the preload test, run over the records gen_records writes (run_preload.sh):
# grouping, sorting, string building and reductions over thousands of small JSON values.
[.[] | select(.kind != "skip")]
| (group_by(.kind) | map({kind: .[0].kind, n: length, total: (map(.value) | add)})) as $groups
| (map(.name) | unique | length) as $names
| (map(.tags | join("-")) | sort | .[0:3]) as $first
| {records: length, names: $names, groups: $groups, first: $first,
   longest: (map(.name) | max_by(length)),
   histogram: (reduce .[] as $r ({}; .[($r.value % 10 | tostring)] += 1))}
