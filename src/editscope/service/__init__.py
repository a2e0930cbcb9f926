"""The editing service: one long-running process that holds a store's model, applies edits in
journal order with one writer, answers queries concurrently from a published copy of the
state, and serves an HTTP API (``/v1``) and a web page over it (``editscope serve``).

Layout: ``settings`` (limits), ``keys`` (API keys and roles), ``requests`` (the service's record
of acknowledged writes: who made them, idempotency keys), ``store_access`` (the store split into
journal-now / apply-later), ``worker`` (the writer thread and the query replica), ``inputs``
(request validation), ``auth``, ``metrics``, ``app`` (the FastAPI routes) and ``page`` (the HTML).
FastAPI, uvicorn, prometheus_client and python-multipart come with the ``serve`` extra."""
