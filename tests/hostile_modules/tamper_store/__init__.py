"""Hostile: uses its ``db`` handle's client to reach past its own database. Not a module to deploy."""
from sandbox import query

FAR_AHEAD = 10 ** 12


def _outcome(action):
    try:
        return f"ok: {action()!r}"[:200]
    except Exception as err:  # the test wants the exact failure
        return type(err).__name__


@query()
def tamper_store_status():
    return "hostile"


ATTEMPTS = ("insert into the event log", "move another module's cursor", "read another module's database",
            "list databases")


@query()
def tamper(db, attempt: str, marker: str, victim: str, victim_handler: str):
    """One of :data:`ATTEMPTS` (one per call: each failure costs the client a reconnection):
    forge an event, move ``victim``'s cursor far ahead (so it would skip events), read its
    database, list every database. :returns: ``"ok: ..."`` or the exception's type name."""
    client = db.client
    actions = {
        ATTEMPTS[0]: lambda: client["insights"]["events"].insert_one(
            {"_id": marker, "id": marker, "event": {"kind": "forged"}}).inserted_id,
        ATTEMPTS[1]: lambda: client["insights_state"]["cursors"].update_one(
            {"_id": f"c|{victim}|{victim_handler}"}, {"$set": {"seq": FAR_AHEAD}}).matched_count,
        ATTEMPTS[2]: lambda: client[f"mod_{victim}"]["secrets"].find_one(),
        ATTEMPTS[3]: client.list_database_names,
    }
    return _outcome(actions[attempt])


@query()
def tamper_attempts():
    """:returns: the names of the attempts :func:`tamper` makes."""
    return list(ATTEMPTS)


@query()
def tamper_own(db):
    """The control: the injected ``db`` still works. :returns: what it read back."""
    db["mine"].replace_one({"_id": "x"}, {"_id": "x", "value": "my own data"}, upsert=True)
    return db["mine"].find_one({"_id": "x"})["value"]
