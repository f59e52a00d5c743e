#!/bin/sh
# /usr/sbin/quiesce-agent: runs the agent (one JavaScript file and its FIFREEZE addon in
# /usr/lib/quiesce-agent) with the system's Node.js, 18.15 or later. QUIESCE_AGENT_NODE names
# another node binary.
exec "${QUIESCE_AGENT_NODE:-/usr/bin/node}" /usr/lib/quiesce-agent/quiesce-agent.mjs "$@"
