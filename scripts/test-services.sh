#!/usr/bin/env bash
# Makes sure the real services the test suite talks to are up: PostgreSQL (127.0.0.1:5432, trust auth,
# database `test`), NATS with JetStream (127.0.0.1:4222) and Redis (127.0.0.1:6379, the shared profile store). Starts them where they are installed but down,
# and fails with a message when one is still unreachable, so that their tests never skip unnoticed.
set -uo pipefail

# The PostgreSQL tests run against the real server at 127.0.0.1:5432 (trust auth, database `test`): start it if down.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if command -v psql >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" || true
fi

# The NATS JetStream event sink is tested against the real server at 127.0.0.1:4222: start it if down.
if [ -x /usr/sbin/nats-server ] && ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    for _ in $(seq 1 10); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 1; done
fi

# The Redis profile store is tested against the real server at 127.0.0.1:6379: start it if down.
if command -v redis-server >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null || true
    for _ in $(seq 1 10); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 1; done
fi

status=0
(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null || { echo "test-services: PostgreSQL is not reachable at 127.0.0.1:5432"; status=1; }
(exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || { echo "test-services: NATS is not reachable at 127.0.0.1:4222"; status=1; }
(exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || { echo "test-services: Redis is not reachable at 127.0.0.1:6379"; status=1; }
exit $status
