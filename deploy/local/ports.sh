# Shared by deploy/local/stack and deploy/local/demo (sourced): who holds a port.

# PID of the process listening on TCP port $1 (empty when none is visible).
listener_pid() {
  local hex inode fd
  hex=$(printf '%04X' "$1")
  inode=$(awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { print $10; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
  [ -n "$inode" ] && [ "$inode" != "0" ] || return 0
  for fd in /proc/[0-9]*/fd/*; do
    if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
      fd="${fd#/proc/}"; printf '%s\n' "${fd%%/*}"; return 0
    fi
  done
}

