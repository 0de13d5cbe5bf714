#!/usr/bin/env bash
# Loads a dump written by scripts/backup.sh (.sql.gz, or plain .sql) into database DB, which
# is created here and must not exist yet with tables in it: a restore never mixes with live
# data. Reads the same GOMALL_DB_* variables as the mall (the password via the environment).
#   scripts/restore.sh FILE DB
# Then point a node at it (GOMALL_DB_NAME=DB). If loading fails, the half-loaded DB is dropped.
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: scripts/restore.sh FILE DB" >&2; exit 2; fi
file=$1
db=$2
host=${GOMALL_DB_HOST:-127.0.0.1}
port=${GOMALL_DB_PORT:-3306}
user=${GOMALL_DB_USER:-root}
case $db in ''|*[!A-Za-z0-9_]*) echo "restore: database name must be letters, digits and _ only" >&2; exit 2;; esac
[ -r "$file" ] || { echo "restore: cannot read $file" >&2; exit 2; }
case $file in
	*.gz) gzip -t -- "$file" || { echo "restore: $file is not a complete gzip file" >&2; exit 2; }; reader=(gzip -dc -- "$file");;
	*) reader=(cat -- "$file");;
esac

export MYSQL_PWD=${GOMALL_DB_PASSWORD:-}
sql() { mysql --host="$host" --port="$port" --user="$user" --batch --skip-column-names "$@"; }

tables=$(sql -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$db'")
if [ "$tables" != "0" ]; then
	echo "restore: database $db already has $tables table(s); restore into a new database" >&2
	exit 1
fi
sql -e "CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
if ! "${reader[@]}" | sql "$db"; then
	sql -e "DROP DATABASE IF EXISTS \`$db\`" || true
	echo "restore: loading $file failed; $db dropped" >&2
	exit 1
fi
tables=$(sql -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$db'")
echo "restore: loaded $file into $db ($tables tables)"
