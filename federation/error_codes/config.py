"""Codes of configuration: files, catalogs, node keys, the command line, the demo and `hpf init`."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import ConfigError, UnavailableError

_config = Area("Configuration", ConfigError, Scope.LOCAL, Effect.REGION_MISSING)
_cli = Area("Command line, demo and hpf init", ConfigError, Scope.LOCAL, Effect.REGION_MISSING)
_backup = Area("Backup and restore", ConfigError, Scope.LOCAL, Effect.REGION_MISSING)

CODES: tuple[Code, ...] = (
    _config.code("CONFIG_INVALID", "a configuration file (catalog, node, coordinator, profile) is wrong"),
    _config.code("CONFIG_NOT_FOUND", "a configuration file is not there"),
    _config.code("CONFIG_UNREADABLE", "a configuration file cannot be read"),
    _config.code("CONFIG_SYNTAX", "a configuration file is not valid YAML or UTF-8 text"),
    _config.code("CONFIG_TOO_LARGE", "a configuration file is larger than any configuration file is"),
    _config.code("CONFIG_TOO_COMPLEX", "a configuration file nests too deeply or expands past its bound"),
    _config.code("CONFIG_WRONG_KIND", "a configuration file of another kind than expected"),
    _config.code("CONFIG_STATE_UNWRITABLE", "the node cannot write its state directory"),
    _config.code("CONFIG_BUDGET_LEDGER_UNREADABLE", "the node's privacy budget ledger cannot be used"),
    _config.code(
        "CONFIG_BUDGET_LEDGER_UNAVAILABLE",
        "the node cannot read or write its privacy budget ledger now; nothing was answered or spent",
        scope=Scope.REGION,
    ),
    _config.code("CATALOG_NODE_UNKNOWN", "the catalog lists no such node"),
    _config.code("CATALOG_KEY_CONFLICT", "the catalog already publishes another key for the node"),
    _config.code("CATALOG_EDIT_FAILED", "the catalog cannot be edited without rewriting its layout"),
    _config.code("CATALOG_CHANGE_NEEDS_RESTART", "the catalog changed what a running party cannot take"),
    _config.code("NODE_KEYS_INVALID", "a node's key file is not valid"),
    _config.code("NODE_KEYS_TWICE", "two key files for one node give different keys"),
    _config.code("NODE_KEYS_OUTPUT", "the key file would be written inside the node's state directory"),
    _config.code("NODE_KEY_MISMATCH", "the catalog's key for the node is not the node's own"),
    _config.code("NODE_KEYS_MISSING", "the node's keys are not in its state directory (made by hpf node keys)"),
    _config.code("NODE_KEYS_UNPUBLISHED", "the catalog publishes no key for the node yet (hpf catalog keys)"),
    _config.code(
        "NODE_NOT_SERVING", "the running node says it cannot serve now (health NOT_SERVING)", UnavailableError
    ),
    _config.code(
        "NODE_HEALTH_UNANSWERED", "something listens on the node's port but gives no health answer", UnavailableError
    ),
    _config.code("DOCTOR_CHECK_FAILED", "hpf node doctor could not finish one of its checks"),
    _config.code("NODE_ADDRESS_UNRESOLVED", "the host of the catalog's address for the node does not resolve"),
    _config.code("NODE_DSN_MISSING", "the node's database connection string is not where its configuration says"),
    _config.code("NODE_DSN_UNSAFE", "the file holding the node's database connection string is open to others"),
    _config.code("NODE_SPARK_MISSING", "the node's tables are on Spark, and Spark's Python library is not installed"),
    _config.code(
        "NODE_NOT_RUNNING", "no running node serves the state directory or the port the command names", UnavailableError
    ),
    _config.code("NODE_REFRESH_UNREADABLE", "the node's answer to hpf node refresh is not one", UnavailableError),
    _config.code(
        "NODE_REFRESH_TIMEOUT", "the node did not finish computing its lookup facts in the time given", UnavailableError
    ),
    _config.code("SERVER_BIND_FAILED", "the server cannot listen on its address"),
    _config.code("CONFIG_METRICS_EXPOSED", "the metrics endpoint would listen off loopback without mutual TLS"),
    _config.code("CONFIG_METRICS_TLS_MISSING", "the metrics endpoint asks for TLS, and the party has no certificates"),
    _cli.code("CLI_BAD_OPTION", "the command's options do not go together, or one is missing"),
    _cli.code("DEMO_ARGS", "the demo's options are out of range"),
    _cli.code("DEMO_RUNNING", "a demo is already running"),
    _cli.code("DEMO_START_FAILED", "a party of the demo did not start", UnavailableError),
    _cli.code(
        "DEMO_POSTGRES_UNREACHABLE", "the demo cannot connect to the PostgreSQL server it was given", UnavailableError
    ),
    _cli.code("DEMO_POSTGRES_REFUSED", "the PostgreSQL server refused to make or load the demo's database"),
    _cli.code("INIT_ARGS", "the options of hpf init are not valid"),
    _cli.code("INIT_SCHEMA", "the table schema given to hpf init is not valid"),
    _cli.code("INIT_EXISTS", "the folder holds a federation already"),
    _backup.code("BACKUP_TARGET_NOT_EMPTY", "the folder a backup is written to is not empty"),
    _backup.code(
        "BACKUP_TARGET_INSIDE_STATE", "the folder a backup is written to is inside the node's state directory"
    ),
    _backup.code("BACKUP_FAILED", "the node's state could not be read or the backup written"),
    _backup.code("BACKUP_MANIFEST_INVALID", "the backup has no readable manifest"),
    _backup.code("BACKUP_DIGEST_MISMATCH", "a file of the backup is missing, extra or not the one its manifest lists"),
    _backup.code("BACKUP_FILE_UNEXPECTED", "the backup holds a file or folder no backup writes"),
    _backup.code("BACKUP_NODE_MISMATCH", "the backup is another node's than the configuration's"),
    _backup.code("BACKUP_AUDIT_INVALID", "the backup's audit log does not verify against its checkpoint"),
    _backup.code("RESTORE_NODE_RUNNING", "a node is running on the configuration's port or state directory"),
    _backup.code("RESTORE_STATE_NOT_EMPTY", "the node's state directory holds state already"),
    _backup.code("RESTORE_STATE_MISMATCH", "the restored state does not match the restore it says is pending"),
    _backup.code("RESTORE_CLOCK_BEHIND", "the backup was taken after this host's clock: the clock is behind"),
)
