#!/bin/bash
# First start of the PostgreSQL container only (an empty data volume): one role and one database
# each for MLflow, the velocast audit log and the Airflow metadata. Passwords come from the
# environment (deploy/.env); psql variables quote them, so no value is ever pasted into SQL.
set -euo pipefail

create_database() {
    local name="$1" password="$2"
    if [ -z "$password" ]; then
        echo "init-databases: the password of '$name' is empty (see deploy/.env.example)" >&2
        exit 1
    fi
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v name="$name" -v password="$password" <<-'EOSQL'
	CREATE ROLE :"name" LOGIN PASSWORD :'password';
	CREATE DATABASE :"name" OWNER :"name";
	REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
EOSQL
}

create_database mlflow "${MLFLOW_DB_PASSWORD:-}"
create_database velocast "${VELOCAST_DB_PASSWORD:-}"
create_database airflow "${AIRFLOW_DB_PASSWORD:-}"
