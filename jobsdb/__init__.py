"""The Postgres queue: schema, migrations, enqueue, claim, ack, retention. The only module writing queue SQL."""
