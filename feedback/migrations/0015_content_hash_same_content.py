"""Items hashed before the content hash read line breaks as LF and whole floats as integers
(feedback.item_input.content_hash) get the hash they would have now, so an item sent again
with other line breaks, or `17` for `17.0`, is found a duplicate of them.

Only items whose content holds a CR or a number with only zeros after its point are looked
at, and only a hash this migration can reproduce is changed: over the responses by position,
or over none (an item whose responses were generated keeps the hash of its prompt and context
alone). A hash it cannot reproduce stays: an item holding a float of 1e16 or more, or -0.0,
which the database gives back otherwise than it was sent. An item whose new hash another item
of its campaign already has (the same content, stored before with other line breaks, or
stored meanwhile by an import running during the migration) keeps its own: both stay. The
hashing is copied here as it is at this migration, so a later change to it cannot change what
this one does.
"""

import hashlib
import json

import orjson
from django.db import IntegrityError, migrations, transaction

_stdlib = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def _canonical(value):
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _stdlib(value).encode()


def _as_same_content(value):
    if isinstance(value, str):
        return value.replace("\r\n", "\n").replace("\r", "\n")
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= 2.0**53 else value
    if isinstance(value, dict):
        return {key: _as_same_content(part) for key, part in value.items()}
    if isinstance(value, list):
        return [_as_same_content(part) for part in value]
    return value


def _document(item, responses):
    return {
        "prompt": item.prompt,
        "context": item.context,
        "responses": [
            [r.model_name, r.text, [i["id"] for i in r.images]]
            if r.images
            else [r.model_name, r.text]
            for r in responses
        ],
    }


def _sha(canonical):
    return hashlib.sha256(canonical).hexdigest()


# A CR in a text (the jsonb's text writes it as the escape \r), or a number written with
# nothing but zeros after its point (how jsonb gives back a whole float: 17.0; a float of 1e16
# or more comes back without a point, as an integer, and its hash cannot be reproduced).
_CANDIDATES_POSTGRES = r"""
SELECT i.id FROM feedback_item i
WHERE strpos(i.prompt::text, '\r') > 0 OR strpos(i.context::text, '\r') > 0
   OR i.prompt::text ~ '[0-9]\.0+(?![0-9])' OR i.context::text ~ '[0-9]\.0+(?![0-9])'
   OR EXISTS (SELECT 1 FROM feedback_response r
              WHERE r.item_id = i.id AND (strpos(r.text, chr(13)) > 0
                                          OR strpos(r.model_name, chr(13)) > 0))
ORDER BY i.id
"""


def _candidate_ids(items, connection):
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CANDIDATES_POSTGRES)
            return [row[0] for row in cursor.fetchall()]
    # The demo's SQLite database is small: every item is looked at.
    return list(items.order_by("pk").values_list("pk", flat=True))


def rehash(apps, schema_editor):
    Item = apps.get_model("feedback", "Item")
    Response = apps.get_model("feedback", "Response")
    using = schema_editor.connection.alias
    ids = _candidate_ids(Item.objects.using(using), schema_editor.connection)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        responses: dict[int, list] = {}
        for r in Response.objects.using(using).filter(item_id__in=chunk).order_by("item_id", "position", "id"):
            responses.setdefault(r.item_id, []).append(r)
        for item in Item.objects.using(using).filter(pk__in=chunk).order_by("pk"):
            # Over its responses by position, or over none (responses generated later).
            forms: list[list] = [responses.get(item.pk, []), []]
            for hashed in forms:
                document = _document(item, hashed)
                if _sha(_canonical(document)) != item.content_hash:
                    continue
                new = _sha(_canonical(_as_same_content(document)))
                if new != item.content_hash:
                    try:
                        # An item given this hash meanwhile (an import running while this
                        # migrates) is the same as one found here: this one keeps its own.
                        with transaction.atomic(using=using):
                            Item.objects.using(using).filter(pk=item.pk).update(content_hash=new)
                    except IntegrityError:
                        pass
                break


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0014_generation_answers_without_price"),
    ]

    operations = [
        migrations.RunPython(rehash, migrations.RunPython.noop, elidable=True),
    ]
