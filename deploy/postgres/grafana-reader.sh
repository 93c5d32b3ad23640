#!/bin/sh
# Run by the postgres image once, when it creates the database (docker-entrypoint-initdb.d):
# the read-only role Grafana's datasource connects as (never the owner, `moments`). It reads
# the tables and views the migrations create later too (default privileges of `moments`).
# A database created before this script existed needs these statements run by hand.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE moments_grafana LOGIN PASSWORD :'reader_password';
ALTER ROLE moments_grafana SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE moments TO moments_grafana;
GRANT USAGE ON SCHEMA public TO moments_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO moments_grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE moments IN SCHEMA public GRANT SELECT ON TABLES TO moments_grafana;
SQL
