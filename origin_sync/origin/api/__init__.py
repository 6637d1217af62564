"""The origin's HTTP service (aiohttp), one job a module: `app` assembles it, `errors` turns every error into JSON,
`auth` decides who may call what, and one module a group of endpoints."""
