#!/usr/bin/env bash
# Make sure the tools that sim/netns.py needs to delay a network namespace's loopback exist:
# iproute2 (ip, tc) and, for kernels built without the netem qdisc, iptables (its NFQUEUE target
# hands packets to the user-space delayer). bench/network.py and tests/nodes/test_netem.py use them;
# without root neither can run, and the test skips.
set -euo pipefail
have_all() {
    command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || return 1
    command -v iptables-legacy >/dev/null 2>&1 || command -v iptables >/dev/null 2>&1 || return 1
    return 0
}
if have_all; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_netns_tools: ip/tc/iptables missing and not root; the network-delay test will be skipped" >&2
    exit 0
fi
echo "ensure_netns_tools: installing iproute2 and iptables from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq iproute2 iptables >/dev/null; } || ! have_all; then
    echo "ensure_netns_tools: could not install iproute2/iptables; the network-delay test may be skipped" >&2
fi
