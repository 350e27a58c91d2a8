#!/usr/bin/env bash
# make test: rostest integration tests, then pytest (ROS-free core + pytest-driven ROS tests).
# The last line printed is pytest's summary line.
set -eo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

rostest_rc=0
shopt -s nullglob
for t in test/ros/*.test; do
  echo "=== rostest dream_ros $(basename "$t")"
  log="$ROS_HOME/rostest_$(basename "$t").log"
  # rostest can exit 0 with failed cases: read its summary too.
  if ! rostest --text dream_ros "$(basename "$t")" > "$log" 2>&1 || ! grep -q "RESULT: SUCCESS" "$log"; then
    rostest_rc=1
    tail -40 "$log"
    echo "=== rostest $(basename "$t"): FAILED"
  else
    grep -E "^ \* (RESULT|TESTS|ERRORS|FAILURES)" "$log" || true
  fi
done

set +e
python -m pytest test -p no:cacheprovider "$@"
pytest_rc=$?
set -e
# pytest exit 5 = no tests collected: that is a failure here, not a pass.
[ $rostest_rc -ne 0 ] && exit 1
exit $pytest_rc
