"""Small event batches for the user transformation tests."""

WS = "ws-test"  # the workspace the tests' transformations belong to


def batch(*message_ids: str, **extra):
    events = [{"messageId": m, "type": "track", "event": "Viewed", **extra} for m in message_ids]
    metadata = [
        {"messageId": m, "sourceId": "src-1", "destinationId": "dst-1", "jobId": i}
        for i, m in enumerate(message_ids)
    ]
    return events, metadata
