#!/usr/bin/env bash
# Makes this machine ready to run GoMall and its tests, and says what it could not do.
#  - starts each local server the mall uses (MariaDB, Redis, RabbitMQ, NATS) that is
#    installed but not listening on its default port on 127.0.0.1;
#  - installs the Debian packages the tests use when missing: prometheus (promtool lints
#    /metrics and deploy/prometheus), chromium (loads Swagger UI) and docker-compose (checks
#    the Compose files; no Docker engine is needed for that).
# Quick when everything is there already: `npm test` runs it first, and so does CI.
# Exits 1, naming each one, if something the tests need is still missing at the end.
set -uo pipefail

say() { echo "dev-env: $*" >&2; }
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

problems=()

# ensure PORT NAME BINARY START-COMMAND...: start NAME if BINARY is installed and PORT is closed.
ensure() {
	local port=$1 name=$2 binary=$3
	shift 3
	up "$port" && return 0
	if ! command -v "$binary" >/dev/null && [ ! -x "$binary" ]; then
		problems+=("$name is not listening on 127.0.0.1:$port and is not installed ($binary)")
		return 0
	fi
	say "starting $name"
	as_root "$@" >/dev/null 2>&1 || true
	for _ in $(seq 1 90); do up "$port" && return 0; sleep 1; done
	problems+=("$name did not come up on 127.0.0.1:$port (tried: $*)")
}

ensure 3306 MariaDB /usr/sbin/mariadbd start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
ensure 6379 Redis redis-server bash -c 'mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/dev-env.log'
ensure 5672 RabbitMQ rabbitmq-server rabbitmq-server -detached
ensure 4222 NATS nats-server bash -c 'mkdir -p /var/lib/nats-server && start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log'

# RabbitMQ accepts TCP before it accepts AMQP logins; wait until it is really serving.
if up 5672 && command -v rabbitmqctl >/dev/null; then
	for _ in $(seq 1 6); do as_root timeout 10 rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing Debian packages: ${missing[*]}"
	if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
		problems+=("could not install ${missing[*]} (needs root or passwordless sudo, and Debian's package mirror)")
	fi
fi

if [ ${#problems[@]} -gt 0 ]; then
	for p in "${problems[@]}"; do say "NOT READY: $p"; done
	exit 1
fi
