"""`pcmpipe serve`: a search service and web explorer over trained runs (docs/using.md, first section).

Modules: `catalog` (the runs and galleries served), `batcher` (queued queries answered in batches), `queries`
(request bodies, encoding, hits as JSON), `media` (files from recorded roots, thumbnails, upload checks),
`auth` (bind address, bearer token), `app` (the routes), `server` (socket and uvicorn), `explorer/` (the page).
FastAPI and uvicorn are imported only when a service starts (`pip install 'pcmpipe[serve]'`).
"""
