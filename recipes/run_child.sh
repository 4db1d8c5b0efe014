# Sourced by the recipes' run.sh. `run_child CMD [ARG...]` runs CMD so that a TERM or INT
# sent to the recipe reaches it once: bash holds a trapped signal until its foreground
# child ends, so a recipe stopped mid-stage would leave its trainer running (and holding
# the run folder's lock). The child gets a process group of its own, so a Ctrl-C, which
# the terminal sends to the recipe's group, is forwarded once rather than delivered twice
# (a second Ctrl-C stops a trainer without its checkpoint). Returns the child's status.
run_child() {
  set -m
  "$@" &
  local child=$! status=0
  set +m
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM
  trap 'kill -INT "$child" 2>/dev/null || true' INT
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do  # a signal ended the wait, not the child
    status=0
    wait "$child" || status=$?
  done
  trap - TERM INT
  return "$status"
}
