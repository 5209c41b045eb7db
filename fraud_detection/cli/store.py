"""Store: schema, add, entities, rules, logins."""

from __future__ import annotations

import argparse
import os

from fraud_detection.cli.args import Commands, Parser
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError

# What `add KIND --help` says of each field.
_FIELD_HELP = {
    "bank_id": "the bank's id", "user_id": "the user's id", "account_id": "the account's id",
    "merchant_id": "the merchant's id", "name": "full name", "email": "e-mail address",
    "country": "ISO 3166 two-letter country code, e.g. DE",
    "currency": "ISO 4217 currency code, e.g. EUR", "category": "merchant category, e.g. "
    "grocery", "created_at": "ISO-8601 time the user joined (default: now)",
    "opened_at": "ISO-8601 time the account was opened (default: now)",
}


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store.keyspace import apply_schema

    report = apply_schema(settings, progress=print)
    state = "applied " + ", ".join(map(str, report.applied)) if report.applied else "up to date"
    print(f"keyspace {report.keyspace}: schema version {report.version} ({state})")
    return 0


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.records import ENTITY_FIELDS
    from fraud_detection.store.entities import add_new_entity

    fields = {k: v for k, v in vars(args).items() if k in ENTITY_FIELDS[args.kind]}
    entity_id = add_new_entity(settings, args.kind, fields)
    print(f"added {args.kind} {entity_id}")
    return 0


def cmd_entities(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.io.entity_topics import consume_entity_topics
    from fraud_detection.store.keyspace import connect

    store = connect(settings)
    try:
        report = consume_entity_topics(settings, store, idle_seconds=args.idle_seconds,
                                       progress=print)
    except KeyboardInterrupt:
        return 130
    finally:
        store.close()
    print(report.summary())
    return 0


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store.rules import rules_command

    if args.action != "list" and not args.target:
        raise UsageError(f"rules {args.action} needs "
                         + ("a YAML file" if args.action == "load" else "a rule id"))
    for line in rules_command(settings, args.action, args.target):
        print(line)
    return 0


def cmd_logins(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store.keyspace import connect
    from fraud_detection.store.logins import add_login

    password = os.environ.get(args.password_env)
    if not password:
        raise UsageError(f"set the password in the environment variable {args.password_env} "
                         "(never on the command line)")
    store = connect(settings)
    try:
        viewer = add_login(store, args.username, password, args.role, args.user_id,
                           args.bank_id)
    finally:
        store.close()
    print(f"login {viewer.username}: {viewer.role}"
          + (f" of user {viewer.user_id}" if viewer.user_id else "")
          + (f" of bank {viewer.bank_id}" if viewer.bank_id else ""))
    return 0


def register(commands: Commands) -> None:
    from fraud_detection.records import ACCOUNT_TYPES, ENTITY_FIELDS, OPTIONAL_ENTITY_FIELDS
    from fraud_detection.store.logins import ROLES

    field_help = {**_FIELD_HELP, "account_type": f"one of {', '.join(ACCOUNT_TYPES)}"}

    sch = commands.add("schema", cmd_schema,
                       "create the keyspace and apply the schema's pending migrations "
                       "(idempotent)")
    sch.add_argument("action", choices=("apply",))

    add = commands.add("add", cmd_add,
                       "add a bank, user, account or merchant (checked, no duplicates)")
    kinds = add.add_subparsers(dest="kind", required=True, parser_class=Parser,
                               metavar="KIND")
    for kind, names in ENTITY_FIELDS.items():
        article = "an" if kind[0] in "aeiou" else "a"
        sub = kinds.add_parser(kind, help=f"add {article} {kind}",
                               description=f"Add {article} {kind}.",
                               parents=[commands.settings_flags])
        for name in names:
            optional = name.endswith("_at") or name in OPTIONAL_ENTITY_FIELDS
            sub.add_argument("--" + name.replace("_", "-"), dest=name, required=not optional,
                             metavar=name.split("_")[-1].upper(), help=field_help.get(name))

    ent = commands.add("entities", cmd_entities,
                       "add the banks, users and accounts sent to the entity Kafka topics")
    ent.add_argument("action", choices=("consume",))
    ent.add_argument("--idle-seconds", type=float, default=None,
                     help="stop after this long without a message (default: run until ^C)")

    rul = commands.add("rules", cmd_rules,
                       "the rules table detection re-reads while it runs: list, load, "
                       "pause, resume, delete")
    rul.add_argument("action", choices=("list", "load", "pause", "resume", "delete"))
    rul.add_argument("target", nargs="?",
                     help="YAML file (load) or rule id (pause, resume, delete)")

    lgn = commands.add("logins", cmd_logins, "add a dashboard login with a role (password "
                                             "from an environment variable)")
    lgn.add_argument("action", choices=("add",))
    lgn.add_argument("username")
    lgn.add_argument("--role", required=True, choices=ROLES)
    lgn.add_argument("--user-id", help="the user a customer login sees")
    lgn.add_argument("--bank-id", help="the bank a bank login sees")
    lgn.add_argument("--password-env", default="FRAUD_LOGIN_PASSWORD",
                     help="environment variable holding the password "
                          "(default FRAUD_LOGIN_PASSWORD)")



