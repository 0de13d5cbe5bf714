#!/usr/bin/env bash
# Dumps the GoMall database, compressed, into DIR (default ./backups), keeping the newest
# GOMALL_BACKUP_KEEP dumps (default 7). Reads the same GOMALL_DB_* variables as the mall.
#   scripts/backup.sh [dir]
set -euo pipefail
dir=${1:-./backups}
keep=${GOMALL_BACKUP_KEEP:-7}
host=${GOMALL_DB_HOST:-127.0.0.1}
port=${GOMALL_DB_PORT:-3306}
user=${GOMALL_DB_USER:-root}
name=${GOMALL_DB_NAME:-gomall}
case $keep in ''|*[!0-9]*) echo "backup: GOMALL_BACKUP_KEEP must be a number" >&2; exit 2;; esac

mkdir -p "$dir"
file="$dir/${name}-$(date -u +%Y%m%dT%H%M%SZ).sql.gz"
tmp="$file.partial"
# The password goes through the environment, never the command line (ps would show it).
MYSQL_PWD=${GOMALL_DB_PASSWORD:-} mysqldump --host="$host" --port="$port" --user="$user" \
	--single-transaction --quick --routines --triggers --hex-blob "$name" | gzip -9 > "$tmp"
mv "$tmp" "$file"
echo "backup: wrote $file ($(du -h "$file" | cut -f1))"

# Retention: newest first, drop everything after the first $keep.
ls -1t "$dir"/"$name"-*.sql.gz 2>/dev/null | tail -n +"$((keep + 1))" | while read -r old; do
	rm -f -- "$old"
	echo "backup: removed $old"
done
