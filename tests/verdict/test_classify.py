"""The statement corpus: migration statements as each of the five tools writes them, each with the
class and reason PostgreSQL's parser (through backout.verdict.classify) must give it, and the
deploy dangers it must flag. One line of corpus.jsonl per statement."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from backout.verdict.classify import classify_sql, is_volatile_sql
from backout.verdict.statement import CLASSES

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "corpus.jsonl").read_text().splitlines() if line]


def test_the_corpus_covers_every_tool_and_class():
    assert len(CORPUS) >= 80
    tools = Counter(entry["tool"] for entry in CORPUS)
    assert set(tools) == {"prisma", "alembic", "django", "dbmate", "golang-migrate"}
    assert min(tools.values()) >= 10
    assert set(CLASSES) <= {entry["class"] for entry in CORPUS}


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{e['tool']}-{i}" for i, e in enumerate(CORPUS)])
def test_statement(entry):
    [statement] = classify_sql(entry["sql"])
    assert (statement.kind, sorted(d.kind for d in statement.dangers)) == (entry["class"],
                                                                           sorted(entry.get("dangers", [])))
    assert entry["reason"] in statement.reason


def test_a_script_is_split_by_the_parser_and_what_does_not_parse_is_named_alone():
    sql = ("CREATE TABLE a (id int);\n"
           "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
           "ALTER TABLE a ADD COLUMN b text;\nthis is not sql;\nUPDATE a SET b = 'x; y';\n")
    found = classify_sql(sql)
    assert [s.kind for s in found] == ["expand", "expand", "expand", "unknown", "data"]
    assert found[3].sql == "this is not sql" and "cannot be parsed" in found[3].reason
    assert found[4].sql == "UPDATE a SET b = 'x; y'"


def test_statements_say_what_they_drop_and_create():
    [drop_table, drop_column, create] = classify_sql(
        'DROP TABLE "Tag";\nALTER TABLE notes DROP COLUMN legacy;\nCREATE TABLE public.tags (id int);')
    assert drop_table.drops == [("Tag", None)] and drop_column.drops == [("notes", "legacy")]
    assert create.creates == ["public.tags"] and drop_column.locks == "notes"


def test_volatility_of_a_default_as_postgresql_prints_it():
    assert is_volatile_sql("nextval('orders_id_seq'::regclass)")
    assert is_volatile_sql("gen_random_uuid()")
    assert not is_volatile_sql("now()") and not is_volatile_sql("'draft'::text") and not is_volatile_sql("0")
