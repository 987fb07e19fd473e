#!/bin/sh
# A resumable loop: a handover `exec` job in POSIX sh.
#
# The protocol (SPEC §6):
#   * $HANDOVER_CHECKPOINT holds the last checkpoint as JSON ("" on a first run): resume from it.
#   * Each line written to fd 3 ($HANDOVER_CHECKPOINT_FD) is one JSON checkpoint: echo '{"i":4}' >&3
#   * On SIGTERM (the worker is shutting down) write a checkpoint and exit 75 (EX_TEMPFAIL):
#     "interrupted, resume me later". A child still running at its deadline gets SIGKILL.
#   * Exit 0 when done: the tail of stdout becomes the job's result. Any other exit is a failed
#     attempt (the tail of stderr becomes its error), retried with backoff.
#
#     handover submit --kind exec -- sh examples/checkpointing_loop.sh 100 0.1
set -eu
target=${1:-100}
step=${2:-0.1}
i=0
case "${HANDOVER_CHECKPOINT:-}" in
  *'"i":'*) i=${HANDOVER_CHECKPOINT#*'"i":'}; i=${i%%[!0-9]*} ;;
esac
start=$i
trap 'echo "{\"i\":$i}" >&3; exit 75' TERM
while [ "$i" -lt "$target" ]; do
  sleep "$step" & wait $!  # a trap runs as soon as `wait` is interrupted, not after a plain sleep
  i=$((i + 1))
  echo "{\"i\":$i}" >&3
done
echo "counted to $target (resumed from $start)"
