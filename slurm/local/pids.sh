# Sourced by start-local-slurm.sh and stop-local-slurm.sh (from ../shared/slurm, tested on Debian 12).

# running PID -> true if PID exists and is not a zombie (PID 1 in some sandboxes reaps late,
# so a killed daemon can linger as <defunct> with its old /proc/PID/comm)
running() { local st; st=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1); [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]; }

# pid_alive PIDFILE NAME -> prints pid and returns 0 if PIDFILE names a live process called NAME
pid_alive() {
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
  running "$pid" || return 1
  echo "$pid"
}
