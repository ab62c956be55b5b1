"""How a request learns that its result landed: MinIO's listen stream, shared.

Each file is one idea; each imports only the files listed above it:

* ``loops.py``     handing calls from the hub's threads to the waiting event loops
* ``backoff.py``   capped exponential backoff with full jitter
* ``source.py``    what the machinery needs from storage, and which stream it is
* ``records.py``   the listen stream's lines and the created keys in them
* ``stats.py``     a hub's counters
* ``waiters.py``   who waits for which object key
* ``cleanup.py``   deletions retried in the background
* ``orphans.py``   the sweep of objects no request runs for any more
* ``stream.py``    the reader thread: connect, catch up, read, reconnect
* ``reconcile.py`` the maintenance thread: results whose event never came
* ``hub.py``       one hub per stream, on top: it owns the threads above
* ``waiting.py``   a request waiting on its hub, with storage outages in words

Nothing is imported here, so ``oscar_sd/_storage.py`` may use ``source.py``
without loading the hub.
"""
