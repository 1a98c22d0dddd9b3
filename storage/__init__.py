"""The adapters behind `domain.repositories`: one package per database, each the only code that
knows its driver. `make_store` picks the one the settings name."""


def make_store(settings):
    """The store the settings name, not yet opened: MongoDB when `mongo_uri` is set, otherwise
    the SQLite file at `sqlite_path`."""
    if settings.mongo_uri:
        from storage.mongo import MongoStore
        return MongoStore.connect(settings.mongo_uri, settings.mongo_dbname, settings.mongo_timeout_ms)
    from storage.sqlite import SqliteStore
    return SqliteStore(settings.sqlite_path)
