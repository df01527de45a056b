# Shared by the serving benchmarks (sourced): start `mmintent serve` on a free port.
#
#   start_server LOG RUN_DIR [ARG ...]   runs "$bin serve RUN_DIR --port 0 ARG..." in the
#   background with its output in LOG, waits (30 s at most) until it prints its address, and
#   sets server_pid and server_port. Exits the script, showing LOG, if the server fails.
start_server() {
  local log="$1" run="$2"
  shift 2
  "$bin" serve "$run" --port 0 "$@" >"$log" 2>&1 &
  server_pid=$!
  server_port=""
  for _ in $(seq 1 300); do
    server_port=$(sed -n 's/.*on https\{0,1\}:\/\/[^ ]*:\([0-9][0-9]*\)$/\1/p' "$log" | head -1)
    [ -n "$server_port" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "$(basename "$0"): the server exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$(basename "$0"): the server did not start within 30 s, see $log" >&2
  kill "$server_pid"
  exit 1
}
