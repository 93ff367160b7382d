"""The ingest edge: validates beacons and appends them to the Redis Stream."""
